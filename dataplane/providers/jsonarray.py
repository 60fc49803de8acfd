"""Incremental, sans-IO splitter for a streamed JSON array: `[{…},{…},…]`.

Gemini's `:streamGenerateContent` without `?alt=sse` sends its chunks this way,
one array element at a time. Bytes go in (`feed`); each top-level element comes
out whole, as its raw bytes, once its closing bracket has arrived.

Only structural bytes are looked at: quotes, backslashes inside strings, and
brackets outside them. None of these occurs inside a multi-byte UTF-8
character, and the one piece of state that spans bytes (a backslash escaping
the next byte) is carried across `feed` calls, so a split anywhere is harmless.

Bounds. An element bigger than `max_item_bytes` is not kept whole: only its
last `tail_bytes` are, enough for `jsonbody.tail_object` to find a key near its
end (Gemini puts `usageMetadata` after the candidates). Malformed input never
raises: unbalanced brackets just end the array early or never."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dataplane.providers.jsonbody import TAIL_BYTES

__all__ = ["MAX_ITEM_BYTES", "ArrayItem", "JsonArraySplitter"]

MAX_ITEM_BYTES = 1 << 20

_MARKS = re.compile(rb'[\\"{}\[\]]')
_BACKSLASH, _QUOTE = 0x5C, 0x22
_OPEN, _CLOSE = frozenset(b"{["), frozenset(b"}]")


@dataclass(frozen=True)
class ArrayItem:
    raw: bytes  # the element's bytes; only their tail when `truncated`
    truncated: bool = False


class JsonArraySplitter:
    def __init__(self, max_item_bytes: int = MAX_ITEM_BYTES, tail_bytes: int = TAIL_BYTES) -> None:
        self._max, self._tail = max_item_bytes, tail_bytes
        self._depth = 0  # 1 inside the array, 2+ inside one of its elements
        self._in_string = False
        self._escaped = False  # the previous feed ended on a backslash inside a string
        self._item = bytearray()  # the current element's bytes from earlier feeds
        self._item_size = 0
        self._truncated = False

    def feed(self, data: bytes) -> list[ArrayItem]:
        """Add bytes; return the elements they complete, in order."""
        out: list[ArrayItem] = []
        start: int | None = 0 if self._depth >= 2 else None  # where the open element began in `data`
        skip = 1 if self._escaped else 0
        self._escaped = False
        for mark in _MARKS.finditer(data, skip):
            i = mark.start()
            if i < skip:
                continue  # the byte after a backslash
            byte = data[i]
            if self._in_string:
                if byte == _BACKSLASH:
                    skip = i + 2
                    self._escaped = skip > len(data)
                elif byte == _QUOTE:
                    self._in_string = False
            elif byte == _QUOTE:
                self._in_string = True
            elif byte in _OPEN:
                self._depth += 1
                if self._depth == 2:
                    start = i
            elif byte in _CLOSE and self._depth > 0:
                self._depth -= 1
                if self._depth == 1 and start is not None:
                    out.append(self._take(data[start : i + 1]))
                    start = None
        if start is not None and self._depth >= 2:
            self._keep(data[start:])
        return out

    def _keep(self, piece: bytes) -> None:
        self._item += piece
        self._item_size += len(piece)
        if self._item_size > self._max:
            self._truncated = True
            if len(self._item) > 2 * self._tail:
                del self._item[: len(self._item) - self._tail]

    def _take(self, last: bytes) -> ArrayItem:
        raw = bytes(self._item) + last
        truncated = self._truncated or self._item_size + len(last) > self._max
        self._item.clear()
        self._item_size = 0
        self._truncated = False
        return ArrayItem(raw[-self._tail :], True) if truncated else ArrayItem(raw)

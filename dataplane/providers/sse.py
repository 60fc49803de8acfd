"""Incremental, sans-IO Server-Sent Events splitter.

Bytes go in (`feed`), whole events come out. Every input byte belongs to
exactly one returned `SSEEvent.raw` (or to what `flush` returns), so joining the
raw bytes in order reproduces the input exactly: a proxy can forward events
byte-for-byte, or drop one, without re-serialising anything.

How the buffer works. `_buf` holds the bytes of the current, unfinished event
only: everything before it has been returned. `_line_start` is where the
current line begins and `_scan` where the search for its terminator resumes, so
each byte is scanned once however the input is split. A line ends at `\\n`,
`\\r\\n` or `\\r`; a `\\r` that is the last byte held is not treated as a
terminator yet, because the next byte may be the `\\n` of the same `\\r\\n`
(and an event that ends in such a `\\r` is held until that is known). An empty
line ends the event. Lines are decoded only once whole, and `\\r`/`\\n` never
occur inside a multi-byte UTF-8 character, so a split anywhere is harmless.

The cap. An event bigger than `max_event_bytes` is not parsed: its bytes come
out as `overflow=True` pieces (with `event=None` and `data=""`) as soon as they
arrive, and only the last one or two bytes are held, enough to find where the
event ends. Whether an event overflows depends only on its size, not on how its
bytes were split."""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["MAX_EVENT_BYTES", "SSEEvent", "SSESplitter"]

MAX_EVENT_BYTES = 1 << 20

_EOL = re.compile(rb"\r\n?|\n")
_BOM = "\ufeff"


class SSEEvent(NamedTuple):
    """One event (a tuple: one is made per streamed event, at a third of a dataclass's cost)."""

    # The exact bytes of the event, including its terminating blank line.
    raw: bytes
    # The `event:` field, None when absent.
    event: str | None = None
    # The `data:` lines joined with "\n", per the SSE spec.
    data: str = ""
    # True for a piece of an event too big to parse: forward `raw`, nothing else is set.
    overflow: bool = False


class SSESplitter:
    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max(max_event_bytes, 1)
        self._buf = bytearray()
        self._line_start = 0
        self._scan = 0
        self._lines: list[bytes] = []
        self._overflowing = False
        self._first = True
        self._cr = False

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Add bytes; return the events they complete, in order."""
        out: list[SSEEvent] = []
        if not (self._cr or self._overflowing or b"\r" in data):
            # The usual stream: `data:` lines ending at \n. Finish a pending event line by line,
            # then take the one-line events that follow it the quick way.
            if self._buf:
                if self._buf.endswith(b"\n") and data.startswith(b"\n"):
                    end = 1
                else:
                    end = data.find(b"\n\n")
                    if end < 0:
                        self._walk(data, out)
                        return out
                    end += 2
                self._walk(data[:end], out)
                data = data[end:]
            if self._first and data.startswith(b"data: "):
                self._first = False  # no byte-order mark to strip
            if not self._first:
                data = data[self._plain_events(data, out) :]
            if not data:
                return out
        self._walk(data, out)
        return out

    def skip(self, data: bytes) -> bool:
        """Whether `data` is whole events that start where the last one ended (nothing is
        pending) and can be passed by unsplit, the caller having them: then it is taken as
        fed, and the splitter goes on as if it had returned them. (Bytes that end in `\\n\\n`
        end an event, whatever line ends came before. A chunk that begins with `data: `
        has no byte-order mark.)"""
        if self._buf or self._overflowing or not data.endswith(b"\n\n") or not data.startswith(b"data: "):
            return False
        self._first = False
        return True

    def _walk(self, data: bytes, out: list[SSEEvent]) -> None:
        """Add bytes line by line; the events they complete go to `out`."""
        self._buf += data
        self._cr = self._cr or b"\r" in data  # until a \r shows up, lines can only end at \n
        buf = self._buf
        while True:
            if self._cr:
                m = _EOL.search(buf, self._scan)
                if m is None:
                    self._scan = len(buf)
                    break
                line_end, end = m.start(), m.end()
                if end == len(buf) and end - line_end == 1 and buf[line_end] == 0x0D:
                    self._scan = line_end  # a lone trailing \r: wait for the next byte
                    break
            else:
                line_end = buf.find(b"\n", self._scan)
                if line_end < 0:
                    self._scan = len(buf)
                    break
                end = line_end + 1
            self._scan = end
            if line_end > self._line_start:
                if not self._overflowing:
                    self._lines.append(bytes(buf[self._line_start : line_end]))
                self._line_start = end
            else:
                out.append(self._dispatch(end))
        if self._overflowing or len(buf) > self._max:
            piece = self._shed()
            if piece:
                out.append(SSEEvent(piece, overflow=True))

    def _plain_events(self, data: bytes, out: list[SSEEvent]) -> int:
        """The usual events at the start of `data`, one `data:` line each, added to `out`
        without the line-by-line walk; returns where the first other one begins."""
        start, size = 0, len(data)
        while start < size:
            end = data.find(b"\n\n", start)
            if (
                end < 0
                or not data.startswith(b"data: ", start)
                or data.find(b"\n", start, end) >= 0  # more than one line
                or end + 2 - start > self._max
            ):
                break
            out.append(
                SSEEvent(data[start : end + 2], None, data[start + 6 : end].decode("utf-8", "replace"))
            )
            start = end + 2
        return start

    def flush(self) -> bytes:
        """Return (and forget) the bytes of an unfinished trailing event."""
        event = self.flush_event()
        return event.raw if event is not None else b""

    def flush_event(self) -> SSEEvent | None:
        """Like `flush`, but parsed leniently: the unterminated last line counts."""
        if not self._buf:
            return None
        raw = bytes(self._buf)
        if self._overflowing:
            event = SSEEvent(raw, overflow=True)
        else:
            last = raw[self._line_start :].rstrip(b"\r\n")
            event = self._build(raw, [*self._lines, last] if last else self._lines)
        self._buf.clear()
        self._reset()
        return event

    def _dispatch(self, end: int) -> SSEEvent:
        raw = bytes(self._buf[:end])
        del self._buf[:end]
        if self._overflowing or len(raw) > self._max:
            event = SSEEvent(raw, overflow=True)
        else:
            event = self._build(raw, self._lines)
        self._reset()
        return event

    def _shed(self) -> bytes:
        """Enter (or stay in) overflow: give away all but the bytes that say where the line stands."""
        self._overflowing = True
        self._lines = []
        buf, start = self._buf, self._line_start
        # At a line start nothing need be kept; inside a line, one byte of it (and a trailing \r).
        cut = len(buf) if start == len(buf) else max(start, len(buf) - (2 if buf[-1] == 0x0D else 1))
        piece = bytes(buf[:cut])
        del buf[:cut]
        self._line_start = max(start - cut, 0)
        self._scan -= cut
        return piece

    def _reset(self) -> None:
        self._overflowing = self._first = False
        self._line_start = self._scan = 0
        self._lines = []

    def _build(self, raw: bytes, lines: list[bytes]) -> SSEEvent:
        if len(lines) == 1 and lines[0].startswith(b"data: ") and not self._first:
            return SSEEvent(raw, None, lines[0][6:].decode("utf-8", "replace"))  # the usual event
        name: str | None = None
        data: list[str] = []
        for i, line_bytes in enumerate(lines):
            line = line_bytes.decode("utf-8", "replace")
            if i == 0 and self._first and line.startswith(_BOM):
                line = line[1:]
            field, colon, value = line.partition(":")
            if not colon:
                value = ""
            elif value.startswith(" "):
                value = value[1:]
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            # Comments (empty field name), `id`, `retry` and unknown fields are not needed.
        return SSEEvent(raw, name, "\n".join(data))

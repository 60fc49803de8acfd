"""Usage parsers for Google's Gemini API (AI Studio).

`GenerateParser` covers `:generateContent` (one JSON body) and
`:streamGenerateContent`, which comes in two forms: with `?alt=sse`, SSE
events `data: {chunk}` with no event names and no `[DONE]`; without it, a
streamed JSON array `[{chunk},{chunk},…]`. The form is read from the first
byte of the body rather than from the request, so the parser needs nothing
but the bytes. `EmbedParser` covers `:embedContent` and `:batchEmbedContents`.
Bytes are always forwarded unchanged.

Usage is `usageMetadata`, and it is cumulative: each chunk's is the total so
far, so the last one seen wins. For a stream cut short, that last one covers
every chunk delivered whole (a lower bound, per Google). Normalised to the
disjoint kinds of `Usage`:

* `promptTokenCount` includes `cachedContentTokenCount`: input is
  prompt − cached, and cached is billed at the cached rate;
* `toolUsePromptTokenCount` (e.g. grounding results fed to the model) is input;
* `thoughtsTokenCount` is billed as output but is not in
  `candidatesTokenCount`: output is candidates + thoughts, and reasoning is
  thoughts;
* `promptTokensDetails` / `cacheTokensDetails` split the prompt by modality:
  AUDIO and IMAGE tokens not read from the cache are reported apart (priced by
  their own rates where the catalog has them); TEXT, VIDEO and DOCUMENT stay input.

Grounding with Google Search is billed per call: Gemini 3 and later per search
query the model ran (`groundingMetadata.webSearchQueries`), older models once
per grounded prompt (`grounding_per_query`).

Some models fill in `candidatesTokenCount` only in the final chunk. A stream
cut off before it reports no output count; the answer text delivered is then
turned into an estimate (4 bytes a token) and the usage is flagged
`estimated`."""

from __future__ import annotations

import json
from typing import Any, Literal

from dataplane.errors import GatewayError
from dataplane.providers.jsonarray import ArrayItem, JsonArraySplitter
from dataplane.providers.jsonbody import (
    TAIL_BYTES,
    BodyParser,
    JsonBody,
    as_obj,
    as_objs,
    count,
    loads,
    tail_object,
    utf8_len,
)
from dataplane.providers.sse import SSEEvent, SSESplitter
from dataplane.providers.usage import Usage

__all__ = ["EmbedParser", "GenerateParser"]

_USAGE = "usageMetadata"
_WHITESPACE = b" \t\r\n"


def _json_bytes(value: object) -> int:
    """UTF-8 size of a function call's `args`, compactly serialised."""
    try:
        return utf8_len(json.dumps(value, ensure_ascii=False, separators=(",", ":"))) if value else 0
    except (ValueError, RecursionError):
        return 0


def _part_bytes(part: dict[str, Any]) -> int:
    """Text a model produced in one part: text (thoughts included), call arguments, code."""
    call = as_obj(part.get("functionCall"))
    code = as_obj(part.get("executableCode"))
    return utf8_len(part.get("text")) + _json_bytes(call.get("args")) + utf8_len(code.get("code"))


def grounding_per_query(model: str) -> bool:
    """Google bills Gemini 3 and later per search query, Gemini 1.x and 2.x per grounded prompt."""
    return not model.startswith(("gemini-1", "gemini-2"))


def _by_modality(details: object) -> dict[str, int]:
    totals: dict[str, int] = {}
    for item in as_objs(details):
        modality, tokens = item.get("modality"), count(item.get("tokenCount"))
        if isinstance(modality, str) and tokens is not None:
            totals[modality] = totals.get(modality, 0) + tokens
    return totals


def _usage(
    meta: dict[str, Any], finished: bool, answer_bytes: int, text_bytes: int, searches: int | None = None
) -> Usage:
    prompt = count(meta.get("promptTokenCount"))
    cached = count(meta.get("cachedContentTokenCount"))
    tool = count(meta.get("toolUsePromptTokenCount"))
    candidates = count(meta.get("candidatesTokenCount"))
    thoughts = count(meta.get("thoughtsTokenCount"))
    inputs = None
    uncached = _by_modality(meta.get("promptTokensDetails"))
    for modality, tokens in _by_modality(meta.get("cacheTokensDetails")).items():
        uncached[modality] = max(uncached.get(modality, 0) - tokens, 0)
    audio, image = uncached.get("AUDIO"), uncached.get("IMAGE")
    if prompt is not None or tool is not None:
        # An inconsistent report (cached > prompt) bills nothing at the full rate, not a negative.
        inputs = max((prompt or 0) - (cached or 0) - (audio or 0) - (image or 0), 0) + (tool or 0)
    estimated = False
    output: int | None = None
    if candidates is not None:
        output = candidates + (thoughts or 0)
    elif finished:
        output = (thoughts or 0) if meta else None  # e.g. a blocked prompt: nothing generated
    elif answer_bytes:
        output, estimated = (thoughts or 0) + -(-answer_bytes // 4), True
    return Usage(
        input_tokens=inputs,
        output_tokens=output,
        cached_input_tokens=cached,
        audio_input_tokens=audio,
        image_input_tokens=image,
        web_searches=searches,
        reasoning_tokens=thoughts,
        estimated=estimated,
        complete=finished,
        delivered_text_bytes=text_bytes,
    )


class GenerateParser:
    """`:generateContent` and `:streamGenerateContent`, in all three body forms."""

    def __init__(self, stream: bool, grounding_per_query: bool = True) -> None:
        self._form: Literal["sniff", "sse", "array", "body"] = "sniff" if stream else "body"
        self._per_query = grounding_per_query
        self._queries: set[str] = set()
        self._grounded = False
        self._sse = SSESplitter()
        self._array = JsonArraySplitter()
        self._body = JsonBody()
        self._meta: dict[str, Any] = {}
        self._finished = False
        self._text_bytes = 0  # everything generated, thoughts included
        self._answer_bytes = 0  # what candidatesTokenCount counts: thoughts excluded
        self._overflow_tail = bytearray()
        self._result: Usage | None = None

    def feed(self, data: bytes) -> bytes:
        rest = data
        if self._form == "sniff":
            rest = data.lstrip(_WHITESPACE)
            if not rest:
                return data
            first = rest[:1]
            self._form = "array" if first == b"[" else "body" if first == b"{" else "sse"
        if self._form == "sse":
            for event in self._sse.feed(rest):
                self._on_event(event)
        elif self._form == "array":
            for item in self._array.feed(rest):
                self._on_item(item)
        else:
            self._body.feed(rest)
        return data

    def flush(self) -> bytes:
        event = self._sse.flush_event()
        if event is not None:
            self._on_event(event)
        self._end_overflow()
        return b""

    def close(self) -> Usage:
        if self._result is None:
            self.flush()
            if self._form == "body":
                self._read_body()
            searches = len(self._queries) if self._per_query else int(self._grounded)
            self._result = _usage(
                self._meta, self._finished, self._answer_bytes, self._text_bytes, searches or None
            )
        return self._result

    def _on_event(self, event: SSEEvent) -> None:
        if event.overflow:  # a chunk too big to parse (an inline image, say): keep its tail
            self._overflow_tail += event.raw
            if len(self._overflow_tail) > 2 * TAIL_BYTES:
                del self._overflow_tail[:-TAIL_BYTES]
            return
        self._end_overflow()
        self._on_chunk(loads(event.data) if event.data else None)

    def _end_overflow(self) -> None:
        if self._overflow_tail:
            self._on_tail(bytes(self._overflow_tail))
            self._overflow_tail.clear()

    def _on_item(self, item: ArrayItem) -> None:
        if item.truncated:
            self._on_tail(item.raw)
        else:
            self._on_chunk(loads(item.raw))

    def _on_tail(self, tail: bytes) -> None:
        """A chunk known only by its last bytes: its usage, which Gemini sends after the candidates."""
        meta = tail_object(tail, _USAGE, 1)
        if meta is not None:
            self._meta = meta

    def _on_chunk(self, chunk: object) -> None:
        if not isinstance(chunk, dict):
            return
        if isinstance(chunk.get(_USAGE), dict):
            self._meta = chunk[_USAGE]
        if as_obj(chunk.get("promptFeedback")).get("blockReason") is not None:
            self._finished = True
        for candidate in as_objs(chunk.get("candidates")):
            if candidate.get("finishReason") is not None:
                self._finished = True
            grounding = candidate.get("groundingMetadata")
            if isinstance(grounding, dict):
                raw = grounding.get("webSearchQueries")
                queries = [q for q in raw if isinstance(q, str)] if isinstance(raw, list) else []
                self._queries.update(queries)
                self._grounded = self._grounded or bool(queries)
            for part in as_objs(as_obj(candidate.get("content")).get("parts")):
                size = _part_bytes(part)
                self._text_bytes += size
                if part.get("thought") is not True:
                    self._answer_bytes += size

    def _read_body(self) -> None:
        body = self._body.value()
        if body is None:
            meta = self._body.tail_object(_USAGE)
            if meta is not None:
                self._meta, self._finished = meta, True
            return
        self._on_chunk(body)
        self._finished = True


class EmbedParser(BodyParser):
    """`:embedContent` and `:batchEmbedContents` (never streamed): input tokens only.

    Input is `usageMetadata.promptTokenCount` when the response carries it. A
    complete response without it reports output 0 and no input, flagged
    `estimated`: the gateway then bills its estimate of the request's input."""

    def close(self) -> Usage:
        body = self._body.value()
        meta = as_obj(body.get(_USAGE)) if body is not None else self._body.tail_object(_USAGE)
        prompt = count(as_obj(meta).get("promptTokenCount"))
        if prompt is not None:
            return Usage(input_tokens=prompt, output_tokens=0, complete=True)
        vectors = body is not None and ("embedding" in body or "embeddings" in body)
        if vectors or self._body.truncated:
            return Usage(output_tokens=0, estimated=True, complete=vectors)
        return Usage()


# --- errors the gateway answers itself ------------------------------------------------------


def error_body(exc: GatewayError) -> dict[str, object]:
    # google-genai raises ClientError / ServerError from the HTTP status and reads these fields.
    return {"error": {"code": exc.status, "message": exc.message, "status": exc.google_status}}


ABORTED = "The upstream provider closed the stream before it finished."


def stream_abort() -> bytes:
    """google-genai raises on a chunk that is `{"error": …}`."""
    error = {"error": {"code": 502, "message": ABORTED, "status": "UNAVAILABLE"}}
    return b"\n\ndata: " + json.dumps(error).encode() + b"\n\n"

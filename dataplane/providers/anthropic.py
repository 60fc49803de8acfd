"""Usage parser for Anthropic's Messages API (`/v1/messages`), streamed or not.

Besides tokens: `cache_creation.ephemeral_1h_input_tokens` (one-hour cache
writes, part of `cache_creation_input_tokens`, priced apart),
`server_tool_use.web_search_requests` (billed per search) and `service_tier`.

A stream reports usage in two places. `message_start.message.usage` carries
the input and cache counts, plus a provisional `output_tokens` (usually 1).
`message_delta.usage` carries cumulative counts: `output_tokens` always, the
others optionally, and any non-null value overwrites the running total (as the
SDK does). `message_stop` ends the message.

The output count is taken from `message_delta` only. The provisional count is
not what was generated; reporting it for a stream cut off before
`message_delta` would hide that the output is unknown, which is the gateway's
cue to estimate it from the text delivered. It is used only when the stream
finished without any `message_delta`."""

from __future__ import annotations

import json
from typing import Any

from dataplane.errors import GatewayError
from dataplane.providers.jsonbody import EventOrBodyParser, as_obj, as_objs, count, loads, utf8_len
from dataplane.providers.sse import SSEEvent
from dataplane.providers.usage import Usage

__all__ = ["MessagesParser"]

# Anthropic usage field -> Usage field. The kinds of input are already disjoint.
_FIELDS = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_input_tokens": "cached_input_tokens",
    "cache_creation_input_tokens": "cache_write_tokens",
}


def _json_bytes(value: object) -> int:
    """UTF-8 size of a tool call's `input`, as the stream's `partial_json` would spell it."""
    try:
        return utf8_len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    except (ValueError, RecursionError):
        return 0


def _content_bytes(content: object) -> int:
    total = 0
    for block in as_objs(content):
        total += utf8_len(block.get("text")) + utf8_len(block.get("thinking"))
        if block.get("type") == "tool_use":
            total += _json_bytes(block.get("input"))
    return total


class MessagesParser(EventOrBodyParser):
    """Forwards everything as it arrives; `error` events pass through like any other."""

    def __init__(self, stream: bool) -> None:
        super().__init__(stream)
        self._counts: dict[str, int] = {}
        self._provisional_output: int | None = None
        self._done = False
        self._text_bytes = 0
        self._service_tier = ""
        self._result: Usage | None = None

    def close(self) -> Usage:
        if self._result is None:
            self.flush()
            if not self._stream:
                self._read_body()
            counts = self._counts
            if "output_tokens" not in counts and self._done and self._provisional_output is not None:
                counts["output_tokens"] = self._provisional_output
            writes, hour = counts.get("cache_write_tokens"), counts.get("cache_write_1h_tokens")
            if writes is not None and hour:  # cache_creation_input_tokens counts both lifetimes
                writes = max(writes - hour, 0)
            self._result = Usage(
                input_tokens=counts.get("input_tokens"),
                output_tokens=counts.get("output_tokens"),
                cached_input_tokens=counts.get("cached_input_tokens"),
                cache_write_tokens=writes,
                cache_write_1h_tokens=hour,
                web_searches=counts.get("web_searches"),
                service_tier=self._service_tier,
                reasoning_tokens=counts.get("reasoning_tokens"),
                complete=self._done,
                delivered_text_bytes=self._text_bytes,
            )
        return self._result

    def _merge(self, usage: dict[str, Any], *, provisional: bool = False) -> None:
        """Overwrite the running counts with every valid value in `usage`."""
        for key, field in _FIELDS.items():
            value = count(usage.get(key))
            if value is None:
                continue
            if provisional and field == "output_tokens":
                self._provisional_output = value
            else:
                self._counts[field] = value
        nested = {
            "reasoning_tokens": as_obj(usage.get("output_tokens_details")).get("thinking_tokens"),
            "cache_write_1h_tokens": as_obj(usage.get("cache_creation")).get("ephemeral_1h_input_tokens"),
            "web_searches": as_obj(usage.get("server_tool_use")).get("web_search_requests"),
        }
        for field, raw in nested.items():
            value = count(raw)
            if value is not None:
                self._counts[field] = value
        if isinstance(usage.get("service_tier"), str):
            self._service_tier = usage["service_tier"]

    def _on_event(self, event: SSEEvent) -> None:
        chunk = loads(event.data) if event.data and not event.overflow else None
        if not isinstance(chunk, dict):
            return
        kind = chunk.get("type")
        if not isinstance(kind, str):
            kind = event.event
        if kind == "message_start":
            self._merge(as_obj(as_obj(chunk.get("message")).get("usage")), provisional=True)
        elif kind == "message_delta":
            self._merge(as_obj(chunk.get("usage")))
        elif kind == "message_stop":
            self._done = True
        elif kind == "content_block_delta":
            delta = as_obj(chunk.get("delta"))
            keys = ("text", "thinking", "partial_json")  # text_delta, thinking_delta, input_json_delta
            self._text_bytes += sum(utf8_len(delta.get(key)) for key in keys)

    def _read_body(self) -> None:
        body = self._body.value()
        if body is None:
            usage = self._body.tail_object("usage")
            self._done = usage is not None
        else:
            usage = as_obj(body.get("usage"))
            self._done = True
            self._text_bytes = _content_bytes(body.get("content"))
        self._merge(usage or {})


# --- errors the gateway answers itself ------------------------------------------------------


def error_body(exc: GatewayError) -> dict[str, object]:
    return {"type": "error", "error": {"type": exc.anthropic_type, "message": exc.message}}


ABORTED = "The upstream provider closed the stream before it finished."


def stream_abort() -> bytes:
    error = {"type": "error", "error": {"type": "api_error", "message": ABORTED}}
    return b"\n\nevent: error\ndata: " + json.dumps(error).encode() + b"\n\n"

"""Usage parsers for OpenAI's wire formats (and the OpenAI-compatible providers).

`ChatParser` covers `/v1/chat/completions` and the legacy `/v1/completions`,
`ResponsesParser` `/v1/responses`, `EmbeddingsParser` `/v1/embeddings`. All are
sans-IO `UsageParser`s: bytes in, bytes to forward out, `Usage` at the end.

Besides tokens, each reports the `service_tier` the response names (a price
rule may depend on it), and `ResponsesParser` the `web_search_call` and
`file_search_call` output items, which OpenAI bills per call.

A Responses request with `background: true` answers `queued`, without usage,
and the provider runs it later: the gateway would bill it 0. Such requests are
refused (`refuse_background`, a 400 naming `background`) before anything is
reserved or forwarded; polling the run to settle it is not built.

Bounded body handling lives in jsonbody.py."""

from __future__ import annotations

import json
import re
from typing import Any

from dataplane.config import Settings
from dataplane.errors import BadRequest, GatewayError
from dataplane.inbound import RequestView
from dataplane.providers.jsonbody import (
    TAIL_BYTES,
    BodyParser,
    EventOrBodyParser,
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

__all__ = ["ChatParser", "EmbeddingsParser", "ResponsesParser", "refuse_background"]

# --- normalisation -------------------------------------------------------------------------


def _normalise(prompt: object, output: object, in_details: object, out_details: object, **more: Any) -> Usage:
    """The usage object's token counts, with `more` of Usage's fields (one Usage made, not two)."""
    cached = count(as_obj(in_details).get("cached_tokens"))
    writes = count(as_obj(in_details).get("cache_write_tokens"))
    billed = count(prompt)
    if billed is not None:
        # An inconsistent report (cached > prompt) bills nothing at the full rate, not a negative.
        billed = max(billed - (cached or 0) - (writes or 0), 0)
    return Usage(
        input_tokens=billed,
        output_tokens=count(output),
        cached_input_tokens=cached,
        cache_write_tokens=writes,
        reasoning_tokens=count(as_obj(out_details).get("reasoning_tokens")),
        **more,
    )


def _chat_usage(u: dict[str, Any], **more: Any) -> Usage:
    """Chat usage, with the OpenAI-compatible providers' variants:

    * DeepSeek splits the prompt itself into `prompt_cache_hit_tokens` (the
      cached rate) and `prompt_cache_miss_tokens` (the full rate); they win
      over `prompt_tokens_details`, which may repeat the hits.
    * Moonshot's moonshot-v1 reports cache hits as a top-level `cached_tokens`.
    * xAI counts `reasoning_tokens` outside `completion_tokens` (its
      `total_tokens` is prompt + completion + reasoning) and bills them as
      output. Recognised by that sum, so OpenAI's own usage, where reasoning
      is inside completion, is never counted twice."""
    in_details = as_obj(u.get("prompt_tokens_details"))
    if "cached_tokens" not in in_details and count(u.get("cached_tokens")) is not None:
        in_details = {**in_details, "cached_tokens": u["cached_tokens"]}
    prompt, completion = u.get("prompt_tokens"), u.get("completion_tokens")
    usage = _normalise(prompt, completion, in_details, u.get("completion_tokens_details"), **more)
    hit, miss = count(u.get("prompt_cache_hit_tokens")), count(u.get("prompt_cache_miss_tokens"))
    if hit is not None or miss is not None:
        whole = count(prompt)
        if hit is None and miss is not None and whole is not None:
            hit = max(whole - miss, 0)
        elif miss is None and hit is not None:
            miss = None if whole is None else max(whole - hit, 0)
        usage = usage._replace(input_tokens=miss, cached_input_tokens=hit, cache_write_tokens=None)
    reasoning, output, prompt_count = usage.reasoning_tokens, usage.output_tokens, count(prompt)
    if (
        reasoning
        and output is not None
        and prompt_count is not None
        and count(u.get("total_tokens")) == prompt_count + output + reasoning
    ):
        usage = usage._replace(output_tokens=output + reasoning)
    return usage


def _responses_usage(u: dict[str, Any], **more: Any) -> Usage:
    details = u.get("input_tokens_details"), u.get("output_tokens_details")
    return _normalise(u.get("input_tokens"), u.get("output_tokens"), *details, **more)


def _tier(holder: dict[str, Any]) -> str:
    tier = holder.get("service_tier")
    return tier if isinstance(tier, str) else ""


# Responses output items OpenAI bills per call (besides their tokens).
_SEARCH_CALLS = {"web_search_call": "web_searches", "file_search_call": "file_searches"}


def _search_calls(items: list[dict[str, Any]]) -> dict[str, int]:
    """The per-call-billed items among `items`, counted by Usage field (absent: none)."""
    calls: dict[str, int] = {}
    for item in items:
        field = _SEARCH_CALLS.get(item.get("type"))  # type: ignore[arg-type]
        if field is not None:
            calls[field] = calls.get(field, 0) + 1
    return calls


def _tool_bytes(holder: dict[str, Any]) -> int:
    calls = [as_obj(call.get("function")) for call in as_objs(holder.get("tool_calls"))]
    calls.append(as_obj(holder.get("function_call")))
    return sum(utf8_len(function.get("arguments")) for function in calls)


_TEXT_KEYS = ("content", "reasoning_content", "reasoning", "refusal")


def _message_bytes(message: dict[str, Any]) -> int:
    """Text in a chat `delta` or `message`: content, reasoning, refusal and tool arguments.
    (Run on every streamed chunk, so written for speed: ASCII text is its own length.)"""
    size = 0
    for key in _TEXT_KEYS:
        value = message.get(key)
        if value.__class__ is str:
            size += len(value) if value.isascii() else utf8_len(value)
    if "tool_calls" in message or "function_call" in message:
        size += _tool_bytes(message)
    return size


def _choice_bytes(choice: dict[str, Any]) -> int:
    message = choice.get("delta")
    if not (isinstance(message, dict) and message):
        message = as_obj(choice.get("message"))
    text = choice.get("text")
    return (utf8_len(text) if text else 0) + _message_bytes(message)


def _choices_bytes(choices: list[Any]) -> int:
    return sum(_choice_bytes(choice) for choice in choices if isinstance(choice, dict))


# --- chat completions ------------------------------------------------------------------------


# A stream's events whose text is not yet counted, held for it up to this many bytes.
UNCOUNTED_BYTES = 256 << 10
# A `"usage"` key whose value may not be null. (A quote inside a JSON string is escaped,
# so `"usage"` can only be a key.)
_TELLING_USAGE = re.compile(rb'"usage"(?!\s*:\s*null)')


def _quiet_part(data: bytes) -> int:
    """How many of a chunk's first bytes surely say nothing but text: those before the
    `\\n\\n` that precedes its first `"usage"` other than `"usage": null` (what every
    chunk but the last says once include_usage is asked for) or its first `[DONE]`;
    all of them when there is neither. Whether that is an event's end, the splitter's
    `skip` decides."""
    done = data.find(b"[DONE]")
    usage = _TELLING_USAGE.search(data, 0, len(data) if done < 0 else done)
    end = done if usage is None else usage.start()
    if end < 0:
        return len(data)
    cut = data.rfind(b"\n\n", 0, end)
    return cut + 2 if cut >= 0 else 0


class ChatParser:
    """`/v1/chat/completions` and `/v1/completions`, streamed or not.

    With `strip_usage_chunk` (stream only), events whose JSON has `"choices": []`
    and a non-null `usage` are not forwarded: the gateway asked for them, the
    client did not. Events are then held until whole; otherwise bytes pass
    straight through.

    Streamed, only an event with a `"usage"` other than null in it is parsed as it
    passes (the usage chunk, Moonshot's choices that carry one). The others, the text
    deltas, matter only if the stream ends without an output count: billing then
    estimates the output from the text delivered. So they are kept unparsed, and
    counted at the end only in that case, or whenever more than UNCOUNTED_BYTES of them
    are held (so a long stream holds no more than that). A stream whose output was
    reported therefore has `delivered_text_bytes` 0: it was not needed, so it was not
    counted. Whole `data:` events before the first that may say more than text are not
    even split into events as they pass (`_quiet_part`, `SSESplitter.skip`)."""

    _sse: SSESplitter  # a stream's

    def __init__(self, stream: bool, strip_usage_chunk: bool = False) -> None:
        self._stream = stream
        self._strip = stream and strip_usage_chunk
        if stream:
            self._sse = SSESplitter()
        self._body = JsonBody()
        self._usage: dict[str, Any] | None = None
        self._service_tier = ""
        self._done = False
        self._text_bytes = 0
        self._uncounted: list[bytes] = []  # whole events whose text is not counted yet
        self._uncounted_bytes = 0
        self._result: Usage | None = None

    def feed(self, data: bytes) -> bytes:
        if not self._stream:
            self._body.feed(data)
            return data
        quiet = _quiet_part(data)
        head = data if quiet == len(data) else data[:quiet]
        if not (quiet and self._sse.skip(head)):
            return self._forward(data)
        self._hold(head)  # text deltas, whole: not even split into events
        if head is data:
            return data
        rest = self._forward(data[quiet:])
        return head + rest if self._strip else data  # (unstripped, the rest goes on as it came)

    def _forward(self, data: bytes) -> bytes:
        """Split `data` into events and record each; what of it to forward."""
        events = self._sse.feed(data)
        if not self._strip:
            for event in events:
                self._on_event(event)
            return data
        return b"".join(event.raw for event in events if not self._on_event(event))

    def flush(self) -> bytes:
        event = self._sse.flush_event() if self._stream else None
        if event is None or self._on_event(event) or not self._strip:
            return b""
        return event.raw

    def close(self) -> Usage:
        if self._result is None:
            self.flush()
            self._result = self._stream_usage() if self._stream else self._body_usage()
        return self._result

    def _on_event(self, event: SSEEvent) -> bool:
        """Record what `event` says; True when it is to be dropped."""
        data = event.data
        if event.overflow or not data:
            return False
        if data[-1] != "}" and data.strip() == "[DONE]":
            self._done = True
            return False
        if _TELLING_USAGE.search(event.raw) is None:  # not the usage chunk: its text can wait
            self._hold(event.raw)
            return False
        chunk = loads(data)
        if not isinstance(chunk, dict):
            return False
        choices = chunk.get("choices")
        if isinstance(choices, list):
            self._text_bytes += _choices_bytes(choices)
            for choice in choices:
                if isinstance(choice, dict) and isinstance(choice.get("usage"), dict):  # Moonshot
                    self._usage = choice["usage"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
            tier = chunk.get("service_tier")
            self._service_tier = tier if isinstance(tier, str) else self._service_tier
        return self._strip and choices == [] and usage is not None

    def _hold(self, events: bytes) -> None:
        self._uncounted.append(events)
        self._uncounted_bytes += len(events)
        if self._uncounted_bytes > UNCOUNTED_BYTES:
            self._count_text()

    def _count_text(self) -> None:
        """Count the held events' text (they are whole: a splitter of their own reads them)."""
        splitter = SSESplitter()
        events = [event for raw in self._uncounted for event in splitter.feed(raw)]
        last = splitter.flush_event()  # an unterminated last event, held at the stream's flush
        for event in [*events, last] if last is not None else events:
            chunk = None if event.overflow or not event.data else loads(event.data)
            choices = chunk.get("choices") if isinstance(chunk, dict) else None
            if isinstance(choices, list):
                self._text_bytes += _choices_bytes(choices)
        self._uncounted.clear()
        self._uncounted_bytes = 0

    def _stream_usage(self) -> Usage:
        usage = _chat_usage(self._usage or {}, complete=self._done, service_tier=self._service_tier)
        if usage.output_tokens is not None:
            return usage  # (delivered_text_bytes: not needed, see above)
        self._count_text()
        return usage._replace(delivered_text_bytes=self._text_bytes)

    def _body_usage(self) -> Usage:
        body = self._body.value()
        if body is None:
            tail = self._body.tail_object("usage")
            return _chat_usage(tail or {})._replace(complete=tail is not None)
        text_bytes = _choices_bytes(as_objs(body.get("choices")))
        return _chat_usage(
            as_obj(body.get("usage")),
            complete=True,
            delivered_text_bytes=text_bytes,
            service_tier=_tier(body),
        )


# --- responses -----------------------------------------------------------------------------

_RESPONSE_END = frozenset({"response.completed", "response.incomplete", "response.failed"})
_RESPONSE_TEXT = frozenset(
    f"response.{kind}.delta"
    for kind in (
        "output_text",
        "refusal",
        "function_call_arguments",
        "custom_tool_call_input",
        "mcp_call_arguments",
        "reasoning_text",
        "reasoning_summary_text",
        "audio.transcript",
    )
)


def _output_bytes(output: object) -> int:
    """Text in a response's `output` items: message parts, reasoning, tool arguments."""
    total = 0
    for item in as_objs(output):
        total += utf8_len(item.get("arguments")) + utf8_len(item.get("input"))
        for part in as_objs(item.get("content")) + as_objs(item.get("summary")):
            total += utf8_len(part.get("text")) + utf8_len(part.get("refusal"))
    return total


def refuse_background(view: RequestView, _settings: Settings) -> None:
    """A background run would never be billed (see above). Anything but an absent, null or
    `false` flag is refused: the provider might read it as true."""
    flag = view.body.get("background")
    if flag is not None and flag is not False:
        raise BadRequest(
            "Background runs (`background: true`) cannot be metered by this gateway: the provider "
            "answers `queued`, without usage, and runs the request later. Send the request without "
            "`background` and read the output from the response.",
            param="background",
        )


class ResponsesParser(EventOrBodyParser):
    """`/v1/responses`, streamed or not. Forwards everything as it arrives.

    An event too big for the SSE splitter (a `response.completed` carrying
    generated images, say) is read from its last `TAIL_BYTES`: the usage is
    then the `usage` object one level down, in `response`."""

    def __init__(self, stream: bool) -> None:
        super().__init__(stream)
        self._overflow_tail = bytearray()
        self._usage: dict[str, Any] | None = None
        self._service_tier = ""
        self._calls: list[dict[str, Any]] = []  # output items billed per call, as they finished
        self._done = False
        self._text_bytes = 0
        self._result: Usage | None = None

    def _after_flush(self) -> None:
        self._end_overflow()

    def close(self) -> Usage:
        if self._result is None:
            self.flush()
            if not self._stream:
                self._read_body()
            calls = _search_calls(self._calls)
            self._result = _responses_usage(
                self._usage or {},
                complete=self._done,
                delivered_text_bytes=self._text_bytes,
                service_tier=self._service_tier,
                web_searches=calls.get("web_searches"),
                file_searches=calls.get("file_searches"),
            )
        return self._result

    def _on_event(self, event: SSEEvent) -> None:
        if event.overflow:
            self._overflow_tail += event.raw
            if len(self._overflow_tail) > 2 * TAIL_BYTES:
                del self._overflow_tail[:-TAIL_BYTES]
            return
        self._end_overflow()
        chunk = loads(event.data) if event.data else None
        if not isinstance(chunk, dict):
            return
        kind = chunk.get("type")
        if not isinstance(kind, str):
            kind = event.event
        if kind in _RESPONSE_END:
            self._done = True
            response = as_obj(chunk.get("response"))
            usage = response.get("usage")
            if isinstance(usage, dict):
                self._usage = usage
            self._service_tier = _tier(response)
        elif kind in _RESPONSE_TEXT:
            self._text_bytes += utf8_len(chunk.get("delta"))
        elif kind == "response.output_item.done":
            item = as_obj(chunk.get("item"))
            if item.get("type") in _SEARCH_CALLS:
                self._calls.append(item)

    def _end_overflow(self) -> None:
        if self._overflow_tail:
            usage = tail_object(bytes(self._overflow_tail), "usage", 2)
            if usage is not None:  # only the terminal events carry a non-null response.usage
                self._usage, self._done = usage, True
            self._overflow_tail.clear()

    def _read_body(self) -> None:
        body = self._body.value()
        if body is None:
            self._usage = self._body.tail_object("usage")
            self._done = self._usage is not None
            return
        usage = body.get("usage")
        self._usage = usage if isinstance(usage, dict) else None
        self._done = True
        self._text_bytes = _output_bytes(body.get("output"))
        self._service_tier = _tier(body)
        self._calls = as_objs(body.get("output"))


# --- embeddings ----------------------------------------------------------------------------


class EmbeddingsParser(BodyParser):
    """`/v1/embeddings` (never streamed): input tokens only."""

    def close(self) -> Usage:
        body = self._body.value()
        usage = as_obj(body.get("usage")) if body is not None else self._body.tail_object("usage")
        complete = body is not None or usage is not None
        prompt = count(as_obj(usage).get("prompt_tokens"))
        return Usage(input_tokens=prompt, output_tokens=None if prompt is None else 0, complete=complete)


# --- errors the gateway answers itself ------------------------------------------------------


def error_body(exc: GatewayError) -> dict[str, object]:
    return {"error": {"message": exc.message, "type": exc.openai_type, "param": exc.param, "code": exc.code}}


ABORTED = "The upstream provider closed the stream before it finished."


def stream_abort() -> bytes:
    """The event that makes the SDK raise when the provider cut the stream off."""
    error = {"error": {"message": ABORTED, "type": "server_error", "param": None, "code": "upstream_aborted"}}
    return b"\n\ndata: " + json.dumps(error).encode() + b"\n\n"

"""A fake OpenAI and Anthropic upstream for tests, the quickstart and benchmarks.

These machines have no internet, so the gateway is pointed at this server. It
answers the routes the official SDKs call with the providers' JSON and SSE
shapes, including the usage blocks, and records what it received. It is a raw
asyncio HTTP/1.1 server with keep-alive, not a framework, so that it is never
the bottleneck in a benchmark. Request bodies may use Content-Length or
chunked encoding. JSON replies carry a Content-Length; SSE replies are chunked.

Routes. The OpenAI routes need `Authorization: Bearer <key>`:
POST /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/responses,
and GET /v1/models. The Anthropic routes need `x-api-key` or a Bearer token:
POST /v1/messages and /v1/messages/count_tokens. Auth failures get a 401 in
the provider's error shape. GET /_mock/requests lists the recorded requests
and DELETE /_mock/requests clears them. DELETE /_mock/cache forgets the
prompt-cache prefixes.

Streamed Chat and legacy Completions chunks carry `"usage": null` only when
`stream_options.include_usage` is set, as upstream does. The usage chunk
(`"choices": []`) comes just before `data: [DONE]`. A Responses stream cut
short by max_output_tokens ends with `response.incomplete`, as upstream does.

Token counts are deterministic, so tests can compute expected costs:

* Prompt tokens are `ceil(B / 4)`, with no per-message overhead
  (`count_prompt_tokens`). B is the UTF-8 byte count of every string under the
  body fields tools, system, instructions, messages, prompt and input, walked
  in that order. Values of the keys in `_SKIPPED_KEYS` (type, role, ids, …) and
  whole `cache_control` objects are not counted. An integer in a prompt or
  input token array is a token id and counts as 4 bytes.
* Output: `desired` is x-mock-output-tokens if sent, else 16. `limit` is the
  first of max_completion_tokens, max_output_tokens or max_tokens that is
  given. `thinking` is 8 when Anthropic `thinking.type` is "enabled" (at most
  `limit`), else 0 (`thinking_tokens`). The reply has
  `n = min(desired, limit - thinking)` words (`reply_tokens`). The output is
  truncated iff `desired + thinking > limit`: finish_reason "length",
  stop_reason "max_tokens", or status "incomplete". output_tokens is
  `n + thinking`; OpenAI's reasoning_tokens is 0. The text is `reply_text(n)`:
  n words cycling through REPLY_WORDS, joined by single spaces, one word per
  stream delta. A forced tool call carries the arguments
  `{"input": reply_text(n)}` and still counts n output tokens.
* Anthropic prompt caching needs a `cache_control` block in tools, system or
  messages. Each block closes a cached prefix, identified by model and content.
  cache_read_input_tokens counts the tokens of the longest prefix this server
  has already seen. cache_creation_input_tokens counts the tokens from there up
  to the last breakpoint. input_tokens counts the rest. The three always add up
  to count_prompt_tokens. Prefixes never expire (beyond a million, all are
  forgotten), and there is no minimum cacheable length.
* OpenAI `cached_tokens` is 0 unless x-mock-cached-tokens says otherwise; it is
  capped at the prompt tokens and included in them.
* An embedding has 8 floats (or `dimensions`), derived from a hash of each
  input item (`mock_embedding`). The values are multiples of 1/128, so they
  survive the base64 float32 round trip exactly.

Header knobs, all optional, are read from the request:

* x-mock-status: N (400 or above) replies with status N and a provider-shaped
  error body. Auth is checked first.
* x-mock-delay-ms: N waits N ms before replying.
* x-mock-chunk-delay-ms: N waits N ms between SSE events.
* x-mock-abort-after: N sends N SSE events, counting garbage lines, and then
  closes the connection without the terminating chunk. For a JSON reply, it
  sends the head and the first N body bytes, then closes.
* x-mock-output-tokens: N sets the desired reply length (see above).
* x-mock-cached-tokens: N is the OpenAI cached_tokens.
* x-mock-garbage: 1 puts a non-JSON `data:` line, with no event name, before
  every SSE event. The stream still ends normally.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import http
import json
import logging
import math
import os
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, Literal

__all__ = [
    "DEFAULT_REPLY_TOKENS",
    "REPLY_WORDS",
    "THINKING_TOKENS",
    "MockUpstream",
    "RecordedRequest",
    "count_prompt_tokens",
    "main",
    "mock_embedding",
    "reply_text",
    "reply_tokens",
    "run_in_thread",
    "running_mock",
    "thinking_tokens",
]

log = logging.getLogger(__name__)

DEFAULT_REPLY_TOKENS = 16
THINKING_TOKENS = 8
EMBEDDING_DIMS = 8
MAX_RECORDED = 10_000
REPLY_WORDS = ("mock", "reply", "from", "the", "fake", "upstream")
THINKING_WORDS = ("let", "me", "think", "about", "this", "mock", "request", "first")
MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
    "o4-mini",
    "text-embedding-3-small",
    "gpt-3.5-turbo-instruct",
)

_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024
_MAX_CACHED_PREFIXES = 1_000_000
_PROMPT_FIELDS = ("tools", "system", "instructions", "messages", "prompt", "input")
_SKIPPED_KEYS = frozenset(
    {
        "type",
        "role",
        "id",
        "tool_use_id",
        "tool_call_id",
        "call_id",
        "signature",
        "cache_control",
        "media_type",
    }
)
_FINGERPRINT = "fp_mock0000"

_Flavor = Literal["openai", "anthropic"]


# --- token accounting (pure) -------------------------------------------------


def _prompt_pieces(body: dict[str, Any]) -> list[bytes | str]:
    """The counted text of a request as byte strings, in order. A `str` item
    marks the end of a block that has `cache_control`; its value is the TTL."""
    out: list[bytes | str] = []

    def walk(node: object, key: str, token_ids: bool) -> None:
        if isinstance(node, str):
            if key not in _SKIPPED_KEYS:
                out.append(node.encode())
        elif isinstance(node, bool):
            pass
        elif isinstance(node, int):
            if token_ids:
                out.append(b"\0\0\0\0")
        elif isinstance(node, list):
            for item in node:
                walk(item, key, token_ids)
        elif isinstance(node, dict):
            for k, v in node.items():
                if k not in _SKIPPED_KEYS:
                    walk(v, k, False)
            cache = node.get("cache_control")
            if isinstance(cache, dict):
                out.append(str(cache.get("ttl") or "5m"))

    for field in _PROMPT_FIELDS:
        if field in body:
            walk(body[field], field, field in ("prompt", "input"))
    return out


def _tokens(n_bytes: int) -> int:
    return math.ceil(n_bytes / 4)


def count_prompt_tokens(body: dict[str, Any]) -> int:
    """ceil(UTF-8 bytes of the request's text / 4); see the module docstring."""
    return _tokens(sum(len(p) for p in _prompt_pieces(body) if isinstance(p, bytes)))


def _output_limit(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_output_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return max(value, 0)
    return None


def thinking_tokens(body: dict[str, Any]) -> int:
    """Tokens of the thinking block the mock emits (Anthropic extended thinking)."""
    thinking = body.get("thinking")
    if not (isinstance(thinking, dict) and thinking.get("type") == "enabled"):
        return 0
    limit = _output_limit(body)
    return THINKING_TOKENS if limit is None else min(THINKING_TOKENS, limit)


def reply_tokens(body: dict[str, Any], forced: int | None = None) -> int:
    """Words in the visible reply (text or tool arguments), excluding thinking."""
    desired = DEFAULT_REPLY_TOKENS if forced is None else forced
    limit = _output_limit(body)
    return desired if limit is None else max(0, min(desired, limit - thinking_tokens(body)))


def _truncated(body: dict[str, Any], forced: int | None) -> bool:
    limit = _output_limit(body)
    desired = DEFAULT_REPLY_TOKENS if forced is None else forced
    return limit is not None and desired + thinking_tokens(body) > limit


def _words(n: int, words: Sequence[str] = REPLY_WORDS) -> list[str]:
    """The stream deltas of an n-token reply: the first word bare, then ' word'."""
    return [("" if i == 0 else " ") + words[i % len(words)] for i in range(n)]


def reply_text(n: int) -> str:
    return "".join(_words(n))


def mock_embedding(item: object, dimensions: int = EMBEDDING_DIMS) -> list[float]:
    """A deterministic vector for one input item (a string or a token array)."""
    seed = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
    raw = b""
    while len(raw) < dimensions:
        raw += hashlib.sha256(seed + len(raw).to_bytes(4, "big")).digest()
    return [(b - 128) / 128 for b in raw[:dimensions]]


def _cache_split(body: dict[str, Any], seen: set[bytes]) -> tuple[int, int, int, str]:
    """(input, cache_creation, cache_read, ttl of the writes) for an Anthropic request."""
    digest = hashlib.sha256(str(body.get("model")).encode())
    size = 0
    marks: list[tuple[int, bytes, str]] = []
    for piece in _prompt_pieces(body):
        if isinstance(piece, str):
            marks.append((size, digest.copy().digest(), piece))
        else:
            digest.update(len(piece).to_bytes(8, "big") + piece)
            size += len(piece)
    total = _tokens(size)
    if not marks:
        return total, 0, 0, "5m"
    read = _tokens(max((at for at, key, _ in marks if key in seen), default=0))
    last = _tokens(marks[-1][0])
    seen.update(key for _, key, _ in marks)
    ttl = "1h" if any(t == "1h" for _, _, t in marks) else "5m"
    return total - last, last - read, read, ttl


# --- HTTP/1.1 request parsing (sans-IO) ----------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]  # names lowercased, in arrival order
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def json(self) -> Any:
        return json.loads(self.body)


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class _Head:
    method: str
    target: str
    headers: list[tuple[str, str]]
    length: int
    chunked: bool
    keep_alive: bool
    expect_continue: bool


def _parse_head(raw: bytes) -> _Head:
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1].startswith("/"):
        raise _HttpError(400, "malformed request line")
    headers: list[tuple[str, str]] = []
    length: int | None = None
    chunked = False
    connection = ""
    expect = False
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name[0] in " \t" or name[-1] in " \t":
            raise _HttpError(400, "malformed header line")
        name = name.lower()
        value = value.strip(" \t")
        headers.append((name, value))
        if name == "content-length":
            if not value.isdigit() or (length is not None and length != int(value)):
                raise _HttpError(400, "bad content-length")
            length = int(value)
        elif name == "transfer-encoding":
            chunked = value.lower().rsplit(",", 1)[-1].strip() == "chunked"
            if not chunked:
                raise _HttpError(501, "unsupported transfer-encoding")
        elif name == "connection":
            connection = value.lower()
        elif name == "expect":
            expect = value.lower() == "100-continue"
    if (length or 0) > _MAX_BODY:
        raise _HttpError(413, "body too large")
    keep_alive = "close" not in connection if parts[2] == "HTTP/1.1" else "keep-alive" in connection
    return _Head(parts[0], parts[1], headers, 0 if chunked else length or 0, chunked, keep_alive, expect)


class _RequestParser:
    """Feed bytes in; take whole requests out. Raises _HttpError on bad input."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head: _Head | None = None
        self._body = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def wants_continue(self) -> bool:
        """Headers asking for `100 Continue` are in, the body is not."""
        return self._head is not None and self._head.expect_continue

    def next_request(self) -> tuple[RecordedRequest, bool] | None:
        """The next whole request and whether to keep the connection alive."""
        buf = self._buf
        if self._head is None:
            while buf.startswith(b"\r\n"):  # RFC 9112 2.2: tolerate stray CRLFs
                del buf[:2]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise _HttpError(431, "request head too large")
                return None
            self._head = _parse_head(bytes(buf[:end]))
            del buf[: end + 4]
        head = self._head
        if head.chunked:
            if not self._read_chunks():
                return None
            body = bytes(self._body)
            self._body = bytearray()
        elif len(buf) < head.length:
            return None
        else:
            body = bytes(buf[: head.length])
            del buf[: head.length]
        self._head = None
        path, _, query = head.target.partition("?")
        return RecordedRequest(head.method, path, query, head.headers, body), head.keep_alive

    def _read_chunks(self) -> bool:
        buf = self._buf
        while True:
            eol = buf.find(b"\r\n")
            if eol < 0:
                if len(buf) > 4096:
                    raise _HttpError(400, "bad chunk size line")
                return False
            size_text = bytes(buf[:eol]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _HttpError(400, "bad chunk size") from None
            if size < 0:
                raise _HttpError(400, "bad chunk size")
            if size == 0:
                end = buf.find(b"\r\n\r\n", eol)  # after optional trailers
                if end < 0:
                    return False
                del buf[: end + 4]
                return True
            if len(buf) < eol + size + 4:
                return False
            if buf[eol + 2 + size : eol + 4 + size] != b"\r\n":
                raise _HttpError(400, "chunk not followed by CRLF")
            self._body += buf[eol + 2 : eol + 2 + size]
            if len(self._body) > _MAX_BODY:
                raise _HttpError(413, "body too large")
            del buf[: eol + 4 + size]


# --- replies -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    events: tuple[bytes, ...] | None = None  # SSE events, sent as one chunk each


@dataclass(frozen=True, slots=True)
class _Knobs:
    status: int | None = None
    delay_ms: int = 0
    chunk_delay_ms: int = 0
    abort_after: int | None = None
    output_tokens: int | None = None
    cached_tokens: int = 0
    garbage: bool = False

    @property
    def immediate(self) -> bool:
        return not self.delay_ms and not self.chunk_delay_ms and self.abort_after is None


_NO_KNOBS = _Knobs()
_KNOB_FIELDS = {
    "x-mock-status": "status",
    "x-mock-delay-ms": "delay_ms",
    "x-mock-chunk-delay-ms": "chunk_delay_ms",
    "x-mock-abort-after": "abort_after",
    "x-mock-output-tokens": "output_tokens",
    "x-mock-cached-tokens": "cached_tokens",
    "x-mock-garbage": "garbage",
}


def _parse_knobs(headers: list[tuple[str, str]]) -> _Knobs:
    values: dict[str, Any] = {}
    for name, value in headers:
        field = _KNOB_FIELDS.get(name)
        if field is None:
            continue
        if not value.isdigit():
            raise ValueError(f"header {name} must be a non-negative integer, got {value!r}")
        values[field] = bool(int(value)) if field == "garbage" else int(value)
    if values.get("status", 400) < 400:
        del values["status"]
    return _Knobs(**values) if values else _NO_KNOBS


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _dumps(obj: object) -> bytes:
    return _encode(obj).encode()


def _chunk_framer(head: dict[str, Any], with_usage: bool) -> Callable[[dict[str, Any]], bytes]:
    """`data: {**head, "choices": [choice], ("usage": null)}` with the constant part encoded once."""
    prefix = b"data: " + _dumps(head)[:-1] + b',"choices":['
    suffix = b'],"usage":null}\n\n' if with_usage else b"]}\n\n"
    return lambda choice: prefix + _dumps(choice) + suffix


def _request_id_header(flavor: _Flavor, rid: str) -> tuple[str, str]:
    return ("request-id" if flavor == "anthropic" else "x-request-id", f"req_{rid}")


def _json_reply(obj: object, flavor: _Flavor, rid: str, status: int = 200) -> _Reply:
    return _Reply(
        status, (("content-type", "application/json"), _request_id_header(flavor, rid)), _dumps(obj)
    )


def _sse_reply(events: list[bytes], flavor: _Flavor, rid: str, knobs: _Knobs) -> _Reply:
    if knobs.garbage:
        events = [e for i, ev in enumerate(events) for e in (b"data: garbage %d {{not json\n\n" % i, ev)]
    headers = (
        ("content-type", "text/event-stream; charset=utf-8"),
        ("cache-control", "no-cache"),
        _request_id_header(flavor, rid),
    )
    return _Reply(200, headers, events=tuple(events))


def _data(obj: object) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


def _event(name: str, obj: object) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _dumps(obj) + b"\n\n"


_OPENAI_ERROR_TYPES = {401: "invalid_request_error", 403: "permission_error", 429: "tokens"}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _error(flavor: _Flavor, status: int, message: str, rid: str, *, param: str | None = None) -> _Reply:
    if flavor == "anthropic":
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": f"req_{rid}",
        }
    else:
        kind = _OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        code = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded"}.get(status)
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return _json_reply(body, flavor, rid, status)


class _BadRequest(Exception):
    """A request the provider would reject with 400; carries the offending param."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _require(body: dict[str, Any], key: str, kind: type | tuple[type, ...], flavor: _Flavor) -> Any:
    value = body.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        if flavor == "anthropic":
            raise _BadRequest(f"{key}: Field required" if value is None else f"{key}: invalid value", key)
        raise _BadRequest(f"Missing required parameter: '{key}'.", key)
    return value


@dataclass(frozen=True, slots=True)
class _Call:
    """Everything a route needs to build its reply."""

    body: dict[str, Any]
    knobs: _Knobs
    rid: str  # fresh random hex, the suffix of every id in this reply
    created: int
    prompt_cache: set[bytes]


# --- OpenAI routes -------------------------------------------------------------


def _tool_name(tool: object) -> str | None:
    if not isinstance(tool, dict):
        return None
    fn = tool.get("function")
    name = fn.get("name") if isinstance(fn, dict) else tool.get("name")
    return name if isinstance(name, str) else None


def _openai_forced_tool(body: dict[str, Any]) -> str | None:
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not isinstance(tools, list) or not tools:
        return None
    if choice == "required":
        return _tool_name(tools[0])
    return _tool_name(choice) if isinstance(choice, dict) else None


def _chat_usage(call: _Call, completion: int) -> dict[str, Any]:
    prompt = count_prompt_tokens(call.body)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": min(call.knobs.cached_tokens, prompt), "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _chat(call: _Call) -> _Reply:
    body = call.body
    model = _require(body, "model", str, "openai")
    _require(body, "messages", list, "openai")
    tool = _openai_forced_tool(body)
    n = reply_tokens(body, call.knobs.output_tokens)
    finish = "length" if _truncated(body, call.knobs.output_tokens) else "tool_calls" if tool else "stop"
    call_id = f"call_{call.rid[:24]}"
    head = {
        "id": f"chatcmpl-{call.rid}",
        "object": "chat.completion",
        "created": call.created,
        "model": model,
    }
    if not body.get("stream"):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply_text(n),
            "refusal": None,
            "annotations": [],
        }
        if tool:
            arguments = json.dumps({"input": reply_text(n)})
            message["content"] = None
            message["tool_calls"] = [
                {"id": call_id, "type": "function", "function": {"name": tool, "arguments": arguments}}
            ]
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        reply = {**head, "choices": [choice], "usage": _chat_usage(call, n), "service_tier": "default"}
        return _json_reply({**reply, "system_fingerprint": _FINGERPRINT}, "openai", call.rid)

    head.update(object="chat.completion.chunk", service_tier="default", system_fingerprint=_FINGERPRINT)
    with_usage = _include_usage(body)
    frame = _chunk_framer(head, with_usage)

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return frame({"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason})

    if tool:
        start = {"index": 0, "id": call_id, "type": "function", "function": {"name": tool, "arguments": ""}}
        events = [chunk({"role": "assistant", "content": None, "tool_calls": [start], "refusal": None})]
        events += [
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            for piece in _json_pieces({"input": reply_text(n)})
        ]
    else:
        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"content": word}) for word in _words(n)]
    events.append(chunk({}, finish))
    if with_usage:
        events.append(_data({**head, "choices": [], "usage": _chat_usage(call, n)}))
    events.append(b"data: [DONE]\n\n")
    return _sse_reply(events, "openai", call.rid, call.knobs)


def _json_pieces(obj: dict[str, Any]) -> list[str]:
    """A JSON document split the way models stream tool arguments: word by word."""
    text = json.dumps(obj)
    pieces, start = [], 0
    while start < len(text):
        end = text.find(" ", start + 1)
        end = len(text) if end < 0 else end
        pieces.append(text[start:end])
        start = end
    return pieces


def _completions(call: _Call) -> _Reply:
    body = call.body
    model = _require(body, "model", str, "openai")
    if "prompt" not in body:
        raise _BadRequest("Missing required parameter: 'prompt'.", "prompt")
    n = reply_tokens(body, call.knobs.output_tokens)
    finish = "length" if _truncated(body, call.knobs.output_tokens) else "stop"
    head = {"id": f"cmpl-{call.rid}", "object": "text_completion", "created": call.created, "model": model}
    prompt = count_prompt_tokens(body)
    usage = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
    if not body.get("stream"):
        choice = {"text": reply_text(n), "index": 0, "logprobs": None, "finish_reason": finish}
        return _json_reply({**head, "choices": [choice], "usage": usage}, "openai", call.rid)
    with_usage = _include_usage(body)
    frame = _chunk_framer(head, with_usage)

    def chunk(text: str, finish_reason: str | None = None) -> bytes:
        return frame({"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason})

    events = [chunk(word) for word in _words(n)]
    events.append(chunk("", finish))
    if with_usage:
        events.append(_data({**head, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return _sse_reply(events, "openai", call.rid, call.knobs)


def _embeddings(call: _Call) -> _Reply:
    body = call.body
    model = _require(body, "model", str, "openai")
    raw = body.get("input")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw)):
        items: list[Any] = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, str | list) for x in raw):
        items = raw
    else:
        raise _BadRequest(
            "'input' must be a string, an array of strings or an array of token arrays.", "input"
        )
    dims = body.get("dimensions", EMBEDDING_DIMS)
    if not isinstance(dims, int) or not 1 <= dims <= 4096:
        raise _BadRequest("'dimensions' must be an integer between 1 and 4096.", "dimensions")
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(items):
        vector: Any = mock_embedding(item, dims)
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    prompt = count_prompt_tokens(body)
    usage = {"prompt_tokens": prompt, "total_tokens": prompt}
    return _json_reply({"object": "list", "data": data, "model": model, "usage": usage}, "openai", call.rid)


def _responses(call: _Call) -> _Reply:
    body = call.body
    model = _require(body, "model", str, "openai")
    if "input" not in body and "instructions" not in body:
        raise _BadRequest("Missing required parameter: 'input'.", "input")
    n = reply_tokens(body, call.knobs.output_tokens)
    incomplete = _truncated(body, call.knobs.output_tokens)
    prompt = count_prompt_tokens(body)
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": min(call.knobs.cached_tokens, prompt)},
        "output_tokens": n,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + n,
    }
    status = "incomplete" if incomplete else "completed"
    text = reply_text(n)
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    item = {
        "id": f"msg_{call.rid}",
        "type": "message",
        "status": status,
        "content": [part],
        "role": "assistant",
    }

    def response(state: str, output: list[Any], used: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": f"resp_{call.rid}",
            "object": "response",
            "created_at": call.created,
            "status": state,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if state == "incomplete" else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []),
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": used,
            "user": None,
            "metadata": body.get("metadata") or {},
        }

    if not body.get("stream"):
        return _json_reply(response(status, [item], usage), "openai", call.rid)
    events: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append(_event(kind, {"type": kind, "sequence_number": len(events), **fields}))

    where = {"item_id": item["id"], "output_index": 0}
    emit("response.created", response=response("in_progress", [], None))
    emit("response.in_progress", response=response("in_progress", [], None))
    emit("response.output_item.added", output_index=0, item={**item, "status": "in_progress", "content": []})
    emit("response.content_part.added", **where, content_index=0, part={**part, "text": ""})
    for word in _words(n):
        emit("response.output_text.delta", **where, content_index=0, delta=word, logprobs=[])
    emit("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
    emit("response.content_part.done", **where, content_index=0, part=part)
    emit("response.output_item.done", output_index=0, item=item)
    emit(f"response.{status}", response=response(status, [item], usage))
    return _sse_reply(events, "openai", call.rid, call.knobs)


def _models(call: _Call) -> _Reply:
    data = [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "system"} for m in MODELS]
    return _json_reply({"object": "list", "data": data}, "openai", call.rid)


# --- Anthropic routes ----------------------------------------------------------


def _anthropic_forced_tool(body: dict[str, Any]) -> str | None:
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not isinstance(tools, list) or not tools or not isinstance(choice, dict):
        return None
    if choice.get("type") == "any":
        return _tool_name(tools[0])
    return _tool_name(choice) if choice.get("type") == "tool" else None


def _messages(call: _Call) -> _Reply:
    body = call.body
    model = _require(body, "model", str, "anthropic")
    _require(body, "max_tokens", int, "anthropic")
    _require(body, "messages", list, "anthropic")
    fresh, creation, read, ttl = _cache_split(body, call.prompt_cache)
    think = thinking_tokens(body)
    n = reply_tokens(body, call.knobs.output_tokens)
    tool = _anthropic_forced_tool(body)
    stop = "max_tokens" if _truncated(body, call.knobs.output_tokens) else "tool_use" if tool else "end_turn"
    thought = "".join(_words(think, THINKING_WORDS))
    signature = base64.b64encode(hashlib.sha256(thought.encode() + call.rid.encode()).digest()).decode()
    usage = {
        "input_tokens": fresh,
        "cache_creation_input_tokens": creation,
        "cache_read_input_tokens": read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": creation if ttl == "5m" else 0,
            "ephemeral_1h_input_tokens": creation if ttl == "1h" else 0,
        },
        "output_tokens": think + n,
        "service_tier": "standard",
    }
    tool_id = f"toolu_{call.rid[:24]}"
    blocks: list[dict[str, Any]] = []
    if think:
        blocks.append({"type": "thinking", "thinking": thought, "signature": signature})
    if tool:
        blocks.append({"type": "tool_use", "id": tool_id, "name": tool, "input": {"input": reply_text(n)}})
    else:
        blocks.append({"type": "text", "text": reply_text(n)})
    message = {"id": f"msg_{call.rid}", "type": "message", "role": "assistant", "model": model}
    if not body.get("stream"):
        full = {**message, "content": blocks, "stop_reason": stop, "stop_sequence": None, "usage": usage}
        return _json_reply(full, "anthropic", call.rid)

    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events = [_event("message_start", {"type": "message_start", "message": start})]

    def block(index: int, opening: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
        events.append(
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
        )
        if index == 0:
            events.append(b'event: ping\ndata: {"type": "ping"}\n\n')
        for delta in deltas:
            events.append(
                _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            )
        events.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))

    if think:
        deltas = [{"type": "thinking_delta", "thinking": w} for w in _words(think, THINKING_WORDS)]
        block(
            0,
            {"type": "thinking", "thinking": "", "signature": ""},
            [*deltas, {"type": "signature_delta", "signature": signature}],
        )
    index = 1 if think else 0
    if tool:
        pieces = ["", *_json_pieces({"input": reply_text(n)})]
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
        block(index, {"type": "tool_use", "id": tool_id, "name": tool, "input": {}}, deltas)
    else:
        block(index, {"type": "text", "text": ""}, [{"type": "text_delta", "text": w} for w in _words(n)])
    delta = {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}}
    events.append(_event("message_delta", {**delta, "usage": {"output_tokens": think + n}}))
    events.append(_event("message_stop", {"type": "message_stop"}))
    return _sse_reply(events, "anthropic", call.rid, call.knobs)


def _count_tokens(call: _Call) -> _Reply:
    _require(call.body, "model", str, "anthropic")
    _require(call.body, "messages", list, "anthropic")
    return _json_reply({"input_tokens": count_prompt_tokens(call.body)}, "anthropic", call.rid)


# (method, path) -> (provider, handler, whether the body is JSON)
_ROUTES: dict[tuple[str, str], tuple[_Flavor, Callable[[_Call], _Reply], bool]] = {
    ("POST", "/v1/chat/completions"): ("openai", _chat, True),
    ("POST", "/v1/completions"): ("openai", _completions, True),
    ("POST", "/v1/embeddings"): ("openai", _embeddings, True),
    ("POST", "/v1/responses"): ("openai", _responses, True),
    ("GET", "/v1/models"): ("openai", _models, False),
    ("POST", "/v1/messages"): ("anthropic", _messages, True),
    ("POST", "/v1/messages/count_tokens"): ("anthropic", _count_tokens, True),
}


def _authorized(flavor: _Flavor, request: RecordedRequest) -> bool:
    bearer = request.header("authorization") or ""
    if bearer[:7].lower() == "bearer " and bearer[7:].strip():
        return True
    return flavor == "anthropic" and bool((request.header("x-api-key") or "").strip())


# --- wire rendering --------------------------------------------------------------

_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


_PHRASES = {s.value: s.phrase for s in http.HTTPStatus} | {529: "Overloaded"}


def _phrase(status: int) -> str:
    return _PHRASES.get(status, "Unknown")


def _render_head(reply: _Reply, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {reply.status} {_phrase(reply.status)}\r\ndate: {_http_date()}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in reply.headers]
    if reply.events is None:
        lines.append(f"content-length: {len(reply.body)}\r\n")
    else:
        lines.append("transfer-encoding: chunked\r\n")
    if not keep_alive:
        lines.append("connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _render(reply: _Reply, keep_alive: bool) -> bytes:
    head = _render_head(reply, keep_alive)
    if reply.events is None:
        return head + reply.body
    return head + b"".join(_chunk(e) for e in reply.events) + b"0\r\n\r\n"


def _plain_error(status: int, message: str) -> bytes:
    reply = _Reply(status, (("content-type", "text/plain"),), message.encode())
    return _render(reply, keep_alive=False)


# --- the server ------------------------------------------------------------------


class MockUpstream:
    """The fake provider. `start()` it on a running loop; `requests` fills up
    as requests arrive (the newest `max_recorded` are kept)."""

    def __init__(self, *, record: bool = True, max_recorded: int = MAX_RECORDED) -> None:
        self.record = record
        self.max_recorded = max_recorded
        self.requests: list[RecordedRequest] = []
        self.host = "127.0.0.1"
        self.port = 0
        self._prompt_cache: set[bytes] = set()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, reuse_address=True)
        self.host, self.port = host, self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = [c.abort() for c in list(self._connections)]
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
        await server.wait_closed()
        await asyncio.sleep(0)  # let the transports run connection_lost

    def reset(self) -> None:
        """Forget recorded requests and prompt-cache prefixes."""
        self.requests.clear()
        self._prompt_cache.clear()

    def _respond(self, request: RecordedRequest) -> tuple[_Reply, _Knobs]:
        """The reply to one request, and how to deliver it. No I/O."""
        rid = os.urandom(12).hex()
        if request.path.startswith("/_mock/"):
            return self._introspect(request, rid), _NO_KNOBS
        if self.record:
            self.requests.append(request)
            if len(self.requests) > self.max_recorded:
                del self.requests[0]
        route = _ROUTES.get((request.method, request.path.rstrip("/") or "/"))
        flavor: _Flavor = "anthropic" if request.path.startswith("/v1/messages") else "openai"
        if route is None:
            return _error(
                flavor, 404, f"Unknown request URL: {request.method} {request.path}.", rid
            ), _NO_KNOBS
        flavor, handler, takes_json = route
        try:
            knobs = _parse_knobs(request.headers)
        except ValueError as exc:
            return _error(flavor, 400, str(exc), rid), _NO_KNOBS
        if not _authorized(flavor, request):
            if flavor == "anthropic":
                return _error(flavor, 401, "x-api-key header is required", rid), knobs
            message = (
                "You didn't provide an API key. Provide it in an Authorization header using Bearer auth."
            )
            return _error(flavor, 401, message, rid), knobs
        if knobs.status is not None:
            return _error(flavor, knobs.status, f"Mock error {knobs.status} (x-mock-status).", rid), knobs
        body: Any = {}
        if takes_json:
            try:
                body = json.loads(request.body)
            except ValueError as exc:
                return _error(flavor, 400, f"The request body is not valid JSON: {exc}", rid), knobs
            if not isinstance(body, dict):
                return _error(flavor, 400, "The request body must be a JSON object.", rid), knobs
        if len(self._prompt_cache) > _MAX_CACHED_PREFIXES:  # bound memory in long benchmarks
            self._prompt_cache.clear()
        try:
            return handler(_Call(body, knobs, rid, int(time.time()), self._prompt_cache)), knobs
        except _BadRequest as exc:
            return _error(flavor, 400, str(exc), rid, param=exc.param), knobs

    def _introspect(self, request: RecordedRequest, rid: str) -> _Reply:
        if request.path == "/_mock/requests" and request.method == "GET":
            return _json_reply([_request_json(r) for r in list(self.requests)], "openai", rid)
        if request.path == "/_mock/requests" and request.method == "DELETE":
            cleared = len(self.requests)
            self.requests.clear()
            return _json_reply({"cleared": cleared}, "openai", rid)
        if request.path == "/_mock/cache" and request.method == "DELETE":
            cleared = len(self._prompt_cache)
            self._prompt_cache.clear()
            return _json_reply({"cleared": cleared}, "openai", rid)
        return _error("openai", 404, f"Unknown mock endpoint: {request.method} {request.path}", rid)


def _request_json(request: RecordedRequest) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for name, value in request.headers:
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    out: dict[str, Any] = {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": headers,
    }
    try:
        out["body"] = request.body.decode()
    except UnicodeDecodeError:
        out["body_b64"] = base64.b64encode(request.body).decode()
    return out


class _Connection(asyncio.Protocol):
    """One client connection. Replies without delays are written straight from
    data_received (the fast path); anything timed runs in a task, with reading
    paused so that pipelined requests are answered in order."""

    def __init__(self, mock: MockUpstream) -> None:
        self._mock = mock
        self._parser = _RequestParser()
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._continued = False
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._mock._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._mock._connections.discard(self)
        self._transport = None
        if self._task is not None:
            self._task.cancel()

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def abort(self) -> asyncio.Task[None] | None:
        task = self._task
        if task is not None:
            task.cancel()
        if self._transport is not None:
            self._transport.abort()
        return task

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        if self._task is None:
            self._pump()

    def _pump(self) -> None:
        transport = self._transport
        while transport is not None and not transport.is_closing():
            try:
                parsed = self._parser.next_request()
            except _HttpError as exc:
                transport.write(_plain_error(exc.status, str(exc)))
                transport.close()
                return
            if parsed is None:
                if self._parser.wants_continue and not self._continued:
                    self._continued = True
                    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return
            self._continued = False
            request, keep_alive = parsed
            try:
                reply, knobs = self._mock._respond(request)
            except Exception as exc:  # a bug in the mock: answer 500 rather than hang the client
                log.exception("mock upstream failed on %s %s", request.method, request.path)
                reply, knobs = _error("openai", 500, f"mock upstream bug: {exc!r}", "bug"), _NO_KNOBS
            if knobs.immediate:
                transport.write(_render(reply, keep_alive))
                if not keep_alive:
                    transport.close()
                continue
            transport.pause_reading()
            self._task = asyncio.get_running_loop().create_task(self._deliver(reply, knobs, keep_alive))
            return

    async def _deliver(self, reply: _Reply, knobs: _Knobs, keep_alive: bool) -> None:
        if knobs.delay_ms:
            await asyncio.sleep(knobs.delay_ms / 1000)
        transport = self._transport
        if transport is None:
            return
        if reply.events is None:
            data = _render(reply, keep_alive)
            if knobs.abort_after is not None:
                head = _render_head(reply, keep_alive)
                transport.write(data[: len(head) + knobs.abort_after])
                transport.close()
                return
            transport.write(data)
        else:
            transport.write(_render_head(reply, keep_alive))
            for i, event in enumerate(reply.events):
                if knobs.abort_after is not None and i >= knobs.abort_after:
                    transport.close()
                    return
                if i and knobs.chunk_delay_ms:
                    await asyncio.sleep(knobs.chunk_delay_ms / 1000)
                if transport.is_closing():
                    return
                transport.write(_chunk(event))
                if self._writable is not None:
                    await self._writable
            if knobs.abort_after is not None and knobs.abort_after <= len(reply.events):
                transport.close()
                return
            transport.write(b"0\r\n\r\n")
        if not keep_alive:
            transport.close()
            return
        self._task = None
        transport.resume_reading()
        self._pump()


# --- running it ------------------------------------------------------------------


def run_in_thread(
    port: int = 0, *, host: str = "127.0.0.1", record: bool = True
) -> tuple[MockUpstream, int, Callable[[], None]]:
    """Serve on a private event loop in a daemon thread, for sync tests.
    Returns the mock, the bound port and an idempotent stop function."""
    loop = asyncio.new_event_loop()
    mock = MockUpstream(record=record)
    thread = threading.Thread(target=loop.run_forever, name="mock-upstream", daemon=True)
    thread.start()
    stopped = threading.Lock()

    def stop() -> None:
        if not stopped.acquire(blocking=False):
            return
        try:
            asyncio.run_coroutine_threadsafe(mock.stop(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()

    try:
        bound = asyncio.run_coroutine_threadsafe(mock.start(host, port), loop).result(timeout=10)
    except BaseException:
        stop()
        raise
    return mock, bound, stop


@contextlib.contextmanager
def running_mock(port: int = 0, *, host: str = "127.0.0.1", record: bool = True) -> Iterator[MockUpstream]:
    """`with running_mock() as mock:` ... `mock.url`, `mock.port`, `mock.requests`."""
    mock, _, stop = run_in_thread(port, host=host, record=record)
    try:
        yield mock
    finally:
        stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: any free port)")
    parser.add_argument(
        "--no-record", dest="record", action="store_false", help="do not keep received requests"
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM."""

    async def serve() -> None:
        mock = MockUpstream(record=args.record)
        port = await mock.start(args.host, args.port)
        print(f"mock upstream listening on http://{args.host}:{port}", flush=True)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows
                loop.add_signal_handler(sig, done.set)
        try:
            await done.wait()
        finally:
            await mock.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="spendgate mock-upstream", description="A fake OpenAI/Anthropic upstream for offline tests."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

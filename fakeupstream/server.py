"""A fake upstream for tests, the quickstart and benchmarks: OpenAI, Anthropic,
Google Gemini, ElevenLabs, Deepgram and the OpenAI-compatible providers (xAI,
Qwen, Moonshot, MiniMax, DeepSeek, Mistral, Cerebras).

These machines have no internet, so the gateway is pointed at this server. It
answers the routes the official SDKs call with the providers' JSON and SSE
shapes, including the usage blocks, and records what it received. It is a raw
asyncio HTTP/1.1 server with keep-alive, not a framework, so that it is never
the bottleneck in a benchmark. Request bodies may use Content-Length or
chunked encoding. JSON replies carry a Content-Length; SSE replies are chunked.

Routes. The OpenAI routes need `Authorization: Bearer <key>`:
POST /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/responses,
and GET /v1/models (openai.py). The Anthropic routes need `x-api-key` or
a Bearer token: POST /v1/messages and /v1/messages/count_tokens
(anthropic.py). Auth failures get a 401 in the provider's error shape.
The Gemini routes, /v1beta/models/{model}:generateContent and its siblings,
need `x-goog-api-key`; their formats and counts are in gemini.py.

The non-token APIs are in media.py, each with its provider's own auth
and error shape: ElevenLabs POST /v1/text-to-speech/{voice_id} (and /stream,
/with-timestamps, /stream/with-timestamps; `xi-api-key`), Deepgram POST
/v1/listen (`Authorization: Token`), and OpenAI POST /v1/audio/speech,
/v1/audio/transcriptions (multipart) and /v1/images/generations (Bearer).

The OpenAI-compatible providers are served under a path prefix: a base URL of
`{mock}/deepseek/v1` reaches /v1/chat/completions with DeepSeek's quirks
(compat.py lists each provider's). The prefix is stripped before routing
and recorded as `RecordedRequest.provider`, so tests can tell which upstream
was called.

GET /_mock/requests lists the recorded requests and DELETE /_mock/requests
clears them. DELETE /_mock/cache forgets the prompt-cache prefixes.

Streamed Chat and legacy Completions chunks carry `"usage": null` only when
`stream_options.include_usage` is set, as upstream does. The usage chunk
(`"choices": []`) comes just before `data: [DONE]`. A Responses stream cut
short by max_output_tokens ends with `response.incomplete`, as upstream does.

Token counts are deterministic, so tests can compute expected costs:

* Prompt tokens are `ceil(B / 4)`, with no per-message overhead
  (`count_prompt_tokens`). B is the UTF-8 byte count of every string under the
  body fields tools, system, instructions, messages, prompt and input, walked
  in that order. Values of the keys in `mock_wire._SKIPPED_KEYS` (type, role, ids, …) and
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
  error body (MiniMax's is an HTTP 200 with a `base_resp` error). Auth is
  checked first.
* x-mock-delay-ms: N waits N ms before replying.
* x-mock-chunk-delay-ms: N waits N ms between SSE events; for a JSON reply,
  between the head and the body.
* x-mock-abort-after: N sends N SSE events, counting garbage lines, and then
  closes the connection without the terminating chunk (for Gemini's streamed
  JSON array, N array elements). For a JSON reply, it sends the head and the
  first N body bytes, then closes.
* x-mock-output-tokens: N sets the desired reply length (see above).
* x-mock-cached-tokens: N is the OpenAI cached_tokens (and the cache hits of
  the OpenAI-compatible providers, and Gemini's cachedContentTokenCount).
* x-mock-web-searches: N reports N server-side web searches: Anthropic's
  `usage.server_tool_use.web_search_requests`, Gemini's
  `groundingMetadata.webSearchQueries` (N queries) on the last candidate.
* x-mock-garbage: 1 puts a non-JSON `data:` line, with no event name, before
  every SSE event. The stream still ends normally.
* x-mock-ratelimit-headers: 1 adds OpenAI's account-wide `x-ratelimit-*` headers
  (`PROVIDER_RATELIMIT_HEADERS`) to a successful reply.
* x-mock-gateway-headers: 1 adds `x-spendgate-*` headers (`GATEWAY_HEADERS`), as
  a provider reached through another gateway would send.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from email.utils import formatdate
from typing import Any

from fakeupstream import anthropic as mock_anthropic
from fakeupstream import gemini as mock_gemini
from fakeupstream import media as mock_media
from fakeupstream import openai as mock_openai
from fakeupstream.compat import COMPATIBLE, quirks_for
from fakeupstream.wire import (
    DEFAULT_REPLY_TOKENS,
    GATEWAY_HEADERS,
    NO_KNOBS,
    PROVIDER_RATELIMIT_HEADERS,
    REPLY_WORDS,
    THINKING_TOKENS,
    BadRequest,
    Call,
    Flavor,
    Knobs,
    Reply,
    count_prompt_tokens,
    error_reply,
    json_reply,
    mock_embedding,
    parse_knobs,
    reply_text,
    reply_tokens,
    thinking_tokens,
)

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

MAX_RECORDED = 10_000

_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024
_MAX_CACHED_PREFIXES = 1_000_000


# --- HTTP/1.1 request parsing (sans-IO) ----------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]  # names lowercased, in arrival order
    body: bytes
    provider: str = ""  # the upstream a path prefix named (/deepseek/v1/…), "" when none

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


# --- routing ---------------------------------------------------------------------

# (method, path) -> (provider, handler, whether the body is JSON)
_ROUTES: dict[tuple[str, str], tuple[Flavor, Callable[[Call], Reply], bool]] = {
    ("POST", "/v1/chat/completions"): ("openai", mock_openai.chat, True),
    ("POST", "/v1/completions"): ("openai", mock_openai.completions, True),
    ("POST", "/v1/embeddings"): ("openai", mock_openai.embeddings, True),
    ("POST", "/v1/responses"): ("openai", mock_openai.responses, True),
    ("GET", "/v1/models"): ("openai", mock_openai.models, False),
    ("POST", "/v1/messages"): ("anthropic", mock_anthropic.messages, True),
    ("POST", "/v1/messages/count_tokens"): ("anthropic", mock_anthropic.count_tokens, True),
}


def _split_prefix(path: str) -> tuple[str, str]:
    """(provider, path without it) for `/<provider>/v1/…`; ("", path) otherwise."""
    first, sep, rest = path[1:].partition("/")
    if sep and first in COMPATIBLE:
        return first, "/" + rest
    return "", path


def _route(method: str, path: str) -> tuple[Flavor, Callable[[Call], Reply], bool, dict[str, str]] | None:
    found = _ROUTES.get((method, path.rstrip("/") or "/"))
    if found is not None:
        return (*found, {})
    gemini = mock_gemini.route(method, path)
    return None if gemini is None else ("google", gemini[0], True, gemini[1])


def _authorized(flavor: Flavor, request: RecordedRequest) -> bool:
    bearer = request.header("authorization") or ""
    if bearer[:7].lower() == "bearer " and bearer[7:].strip():
        return True
    return flavor == "anthropic" and bool((request.header("x-api-key") or "").strip())


def _unauthorized(flavor: Flavor, request: RecordedRequest, rid: str) -> Reply | None:
    if flavor == "google":
        return mock_gemini.authorize(request.header, request.query, rid)
    if _authorized(flavor, request):
        return None
    if flavor == "anthropic":
        return error_reply(flavor, 401, "x-api-key header is required", rid)
    message = "You didn't provide an API key. Provide it in an Authorization header using Bearer auth."
    return error_reply(flavor, 401, message, rid)


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


def _render_head(reply: Reply, keep_alive: bool) -> bytes:
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


def _render(reply: Reply, keep_alive: bool) -> bytes:
    head = _render_head(reply, keep_alive)
    if reply.events is None:
        return head + reply.body
    return head + b"".join(_chunk(e) for e in reply.events) + b"0\r\n\r\n"


def _plain_error(status: int, message: str) -> bytes:
    reply = Reply(status, (("content-type", "text/plain"),), message.encode())
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

    def _respond(self, request: RecordedRequest) -> tuple[Reply, Knobs]:
        """The reply to one request, and how to deliver it. No I/O."""
        rid = os.urandom(12).hex()
        if request.path.startswith("/_mock/"):
            return self._introspect(request, rid), NO_KNOBS
        provider, path = _split_prefix(request.path)
        if provider:
            request = RecordedRequest(
                request.method, request.path, request.query, request.headers, request.body, provider
            )
        if self.record:
            self.requests.append(request)
            if len(self.requests) > self.max_recorded:
                del self.requests[0]
        media = mock_media.respond(
            (request.method, path, request.query, request.headers, request.body), path, rid
        )
        if media is not None:
            return media
        route = _route(request.method, path)
        if route is None:
            flavor: Flavor = (
                "anthropic"
                if path.startswith("/v1/messages")
                else "google"
                if mock_gemini.GEMINI_PATH.match(path)
                else "openai"
            )
            return error_reply(flavor, 404, f"Unknown request URL: {request.method} {path}.", rid), NO_KNOBS
        flavor, handler, takes_json, params = route
        quirks = quirks_for(provider)
        try:
            knobs = parse_knobs(request.headers)
        except ValueError as exc:
            return error_reply(flavor, 400, str(exc), rid), NO_KNOBS
        refusal = _unauthorized(flavor, request, rid)
        if refusal is not None:
            if quirks.error_in_body is not None:
                return quirks.error_in_body(401, "invalid api key", rid), knobs
            return refusal, knobs
        if knobs.status is not None:
            message = f"Mock error {knobs.status} (x-mock-status)."
            if quirks.error_in_body is not None:
                return quirks.error_in_body(knobs.status, message, rid), knobs
            return error_reply(flavor, knobs.status, message, rid), knobs
        body: Any = {}
        if takes_json:
            try:
                body = json.loads(request.body)
            except ValueError as exc:
                return error_reply(flavor, 400, f"The request body is not valid JSON: {exc}", rid), knobs
            if not isinstance(body, dict):
                return error_reply(flavor, 400, "The request body must be a JSON object.", rid), knobs
        if len(self._prompt_cache) > _MAX_CACHED_PREFIXES:  # bound memory in long benchmarks
            self._prompt_cache.clear()
        call = Call(body, knobs, rid, int(time.time()), self._prompt_cache, provider, request.query, params)
        try:
            reply = handler(call)
            if knobs.ratelimit_headers:
                reply = replace(reply, headers=reply.headers + PROVIDER_RATELIMIT_HEADERS)
            if knobs.gateway_headers:
                reply = replace(reply, headers=reply.headers + GATEWAY_HEADERS)
            return reply, knobs
        except BadRequest as exc:
            return error_reply(flavor, 400, str(exc), rid, param=exc.param), knobs

    def _introspect(self, request: RecordedRequest, rid: str) -> Reply:
        if request.path == "/_mock/requests" and request.method == "GET":
            return json_reply([_request_json(r) for r in list(self.requests)], "openai", rid)
        if request.path == "/_mock/requests" and request.method == "DELETE":
            cleared = len(self.requests)
            self.requests.clear()
            return json_reply({"cleared": cleared}, "openai", rid)
        if request.path == "/_mock/cache" and request.method == "DELETE":
            cleared = len(self._prompt_cache)
            self._prompt_cache.clear()
            return json_reply({"cleared": cleared}, "openai", rid)
        return error_reply("openai", 404, f"Unknown mock endpoint: {request.method} {request.path}", rid)


def _request_json(request: RecordedRequest) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for name, value in request.headers:
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    out: dict[str, Any] = {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": headers,
        "provider": request.provider,
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
                reply, knobs = error_reply("openai", 500, f"mock upstream bug: {exc!r}", "bug"), NO_KNOBS
            if knobs.immediate:
                transport.write(_render(reply, keep_alive))
                if not keep_alive:
                    transport.close()
                continue
            transport.pause_reading()
            self._task = asyncio.get_running_loop().create_task(self._deliver(reply, knobs, keep_alive))
            return

    async def _deliver(self, reply: Reply, knobs: Knobs, keep_alive: bool) -> None:
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
            if knobs.chunk_delay_ms:  # the head, then the body a while later
                head = _render_head(reply, keep_alive)
                transport.write(data[: len(head)])
                await asyncio.sleep(knobs.chunk_delay_ms / 1000)
                if transport.is_closing():
                    return
                data = data[len(head) :]
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
        prog="spendgate mock-upstream", description="A fake AI provider upstream for offline tests."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

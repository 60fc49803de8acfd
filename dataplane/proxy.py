"""One metered request, top to bottom:

    authenticate → read and validate the body → resolve the model → estimate
    → Reserve (402 if refused, before any byte goes upstream) → forward
    → stream the response through the provider's usage parser → Settle

Settlement is queued, never awaited by the response. Whatever happens after
the reservation — upstream refused, upstream died mid-stream, client hung up —
ends in exactly one Settle (or one Release if nothing reached the provider)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from controlplane.money import format_usd
from dataplane import estimate
from dataplane.auth import authenticate
from dataplane.budget import Decision, Reserver
from dataplane.config import OPENAI_COMPATIBLE, PROVIDERS, Settings
from dataplane.errors import (
    BadRequest,
    Family,
    Forbidden,
    GatewayError,
    OverCap,
    TooLarge,
    Unauthorized,
    error_response,
)
from dataplane.forward import UpstreamClient, UpstreamResponse, downstream_headers, upstream_headers
from dataplane.keycache import KeyCache, KeyState
from dataplane.pricing import Catalog, ModelPrice
from dataplane.providers import anthropic, google, openai
from dataplane.providers.usage import Usage, UsageParser
from spendgate.v1 import usage_pb2

log = logging.getLogger(__name__)

ParserFactory = Callable[[bool, bool], UsageParser]  # (stream, strip_usage_chunk)


@dataclass(frozen=True)
class Route:
    path: str
    family: Family
    providers: tuple[str, ...]
    parser: ParserFactory
    inject_usage: bool = False  # OpenAI-family streams: ask for the usage chunk
    metered: bool = True
    # Where the model and the stream flag come from: the JSON body ("model",
    # "stream"), or — for APIs like Gemini's — the URL (`{model}` in the path,
    # and a fixed stream flag per route).
    model_in_path: bool = False
    stream: bool | None = None

    def model_and_stream(self, request: Request, body: dict[str, Any]) -> tuple[object, bool]:
        if self.model_in_path:
            return request.path_params.get("model"), bool(self.stream)
        return body.get("model"), body.get("stream") is True


def _gemini(stream: bool, _strip: bool) -> UsageParser:
    return google.GenerateParser(stream)


def _gemini_embed(_stream: bool, _strip: bool) -> UsageParser:
    return google.EmbedParser()


def google_routes(version: str) -> tuple[Route, ...]:
    """Gemini's methods under one API version (google-genai calls v1beta or v1).
    The model is in the path; whether the answer streams is the method's."""
    google_route = partial(Route, family=Family.GOOGLE, providers=("google",), model_in_path=True)
    base = f"/{version}/models/{{model}}:"
    return (
        google_route(base + "generateContent", parser=_gemini, stream=False),
        google_route(base + "streamGenerateContent", parser=_gemini, stream=True),
        google_route(base + "embedContent", parser=_gemini_embed),
        google_route(base + "batchEmbedContents", parser=_gemini_embed),
        google_route(base + "countTokens", parser=_gemini, metered=False),
    )


OPENAI_FAMILY = OPENAI_COMPATIBLE
ROUTES = (
    Route("/v1/chat/completions", Family.OPENAI, OPENAI_FAMILY, openai.ChatParser, inject_usage=True),
    Route("/v1/completions", Family.OPENAI, OPENAI_FAMILY, openai.ChatParser, inject_usage=True),
    Route("/v1/embeddings", Family.OPENAI, OPENAI_FAMILY, lambda _s, _x: openai.EmbeddingsParser()),
    Route("/v1/responses", Family.OPENAI, OPENAI_FAMILY, lambda s, _x: openai.ResponsesParser(s)),
    Route("/v1/messages", Family.ANTHROPIC, ("anthropic",), lambda s, _x: anthropic.MessagesParser(s)),
    Route(
        "/v1/messages/count_tokens",
        Family.ANTHROPIC,
        ("anthropic",),
        lambda _s, _x: anthropic.MessagesParser(False),
        metered=False,
    ),
    *google_routes("v1beta"),
    *google_routes("v1"),
)


@dataclass
class Gateway:
    """What a worker's request handlers share."""

    settings: Settings
    keys: KeyCache
    budget: Reserver
    catalog: Catalog
    upstream: UpstreamClient


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"Request body is larger than this gateway's limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"Request body is larger than this gateway's limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"We could not parse the JSON body of your request: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


def check_allowed(key: KeyState, price: ModelPrice) -> None:
    if key.allowed_models and not {price.model, f"{price.provider}/{price.model}"} & key.allowed_models:
        raise Forbidden(f"This API key is not allowed to use the model `{price.model}`.", param="model")


def refusal_message(decision: Decision) -> str:
    if decision.reason == "key_revoked":
        return "This API key has been revoked."
    if decision.reason == "wallet":
        return "The account's prepaid balance is used up; top up the wallet to continue."
    resets = (
        datetime.fromtimestamp(decision.period_reset_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if decision.period_reset_ms
        else "never (lifetime cap)"
    )
    cap = "none" if decision.cap_micros is None else f"${format_usd(decision.cap_micros)}"
    return (
        f"Spend cap reached for this API key: cap {cap}, spent ${format_usd(decision.spent_micros)}, "
        f"reserved by in-flight requests ${format_usd(decision.reserved_micros)}; resets {resets}. "
        "Raise the key's cap to continue."
    )


@dataclass
class Prepared:
    key: KeyState
    price: ModelPrice
    body: bytes
    stream: bool
    strip_usage: bool
    input_estimate: int  # tokens, for an aborted response that never reported input


def prepare(
    raw: bytes, body: dict[str, Any], route: Route, key: KeyState, catalog: Catalog, request: Request
) -> Prepared:
    model, stream = route.model_and_stream(request, body)
    if not isinstance(model, str) or not model:
        raise BadRequest("You must provide a model parameter.", param="model")
    price = catalog.resolve(model, route.providers)
    check_allowed(key, price)
    strip = False
    changed = model != price.model and not route.model_in_path
    if changed:
        body["model"] = price.model  # "openai/gpt-4o" → "gpt-4o" upstream
    if stream and route.inject_usage and PROVIDERS[price.provider].stream_usage_option:
        options = body.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
            strip = changed = True
    return Prepared(
        key=key,
        price=price,
        body=json.dumps(body).encode() if changed else raw,
        stream=stream,
        strip_usage=strip,
        input_estimate=-(-len(raw) // 4),
    )


async def handle(request: Request, route: Route, gateway: Gateway) -> Response:
    family = route.family
    request_id = uuid.uuid4().hex
    try:
        key = await authenticate(request, gateway.keys)
        raw = await read_body(request, gateway.settings.max_body_bytes)
        body = parse_json(raw)
        prepared = prepare(raw, body, route, key, gateway.catalog, request)
        if route.metered:
            amount = estimate.upper_bound_micros(len(raw), body, prepared.price)
            decision = await gateway.budget.reserve(key.id, request_id, amount)
            if not decision.granted:
                if decision.reason == "key_revoked":
                    raise Unauthorized(refusal_message(decision))
                raise OverCap(refusal_message(decision))
    except ClientDisconnect:
        return Response(status_code=499)
    except GatewayError as exc:
        return error_response(exc, family)

    upstream = gateway.settings.upstreams[prepared.price.provider]
    # The gateway key never travels upstream, in a header or in the URL.
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "key"])
    started = now_ms()
    try:
        response = await gateway.upstream.send(
            "POST",
            upstream.url(request.url.path, query),
            upstream_headers(request.headers.items(), upstream.auth_headers()),
            prepared.body,
        )
    except GatewayError as exc:
        if route.metered:
            gateway.budget.release(request_id)
        return error_response(exc, family)

    meter = Meter(gateway.budget, request_id, prepared, started, response.status, route.metered)
    parser = route.parser(prepared.stream, prepared.strip_usage) if response.status < 400 else None
    return MeteredStream(response, parser, meter, family)


class Meter:
    """Turns what a response delivered into exactly one Settle."""

    def __init__(
        self,
        budget: Reserver,
        request_id: str,
        prepared: Prepared,
        started_ms: int,
        status: int,
        metered: bool,
    ) -> None:
        self._budget = budget
        self._request_id = request_id
        self._p = prepared
        self._started = started_ms
        self._status = status
        self._metered = metered
        self.ttfb_ms = 0

    def done(self, usage: Usage | None, outcome: int) -> None:
        if not self._metered:
            return
        units, estimated = self._units(usage, outcome)
        self._budget.settle(
            usage_pb2.SettleRequest(
                request_id=self._request_id,
                key_id=self._p.key.id,
                provider=self._p.price.provider,
                model=self._p.price.model,
                units=units,
                started_ms=self._started,
                latency_ms=now_ms() - self._started,
                ttfb_ms=self.ttfb_ms,
                status=outcome,
                http_status=self._status,
                estimated=estimated,
            )
        )

    def _units(self, usage: Usage | None, outcome: int) -> tuple[usage_pb2.Units, bool]:
        if usage is None or self._status >= 400:
            return usage_pb2.Units(), False  # upstream refused: costs nothing
        reported = usage.output_tokens is not None
        non_token = any(v is not None for v in (usage.characters, usage.audio_ms, usage.images))
        if non_token:  # billed by characters, audio time or images: no token estimate applies
            reported = True
        elif not reported and usage.delivered_text_bytes == 0 and usage.input_tokens is None:
            return usage_pb2.Units(), False  # nothing came back
        output = usage.output_tokens if reported else -(-usage.delivered_text_bytes // 4)
        inputs = usage.input_tokens if usage.input_tokens is not None or non_token else self._p.input_estimate
        units = usage_pb2.Units(
            input_tokens=inputs or 0,
            output_tokens=output or 0,
            cached_input_tokens=usage.cached_input_tokens or 0,
            cache_write_tokens=usage.cache_write_tokens or 0,
            reasoning_tokens=usage.reasoning_tokens or 0,
            audio_input_tokens=usage.audio_input_tokens or 0,
            audio_output_tokens=usage.audio_output_tokens or 0,
            characters=usage.characters or 0,
            audio_ms=usage.audio_ms or 0,
            images=usage.images or 0,
        )
        return units, usage.estimated or not reported or (usage.input_tokens is None and not non_token)


class MeteredStream(Response):
    """Streams an upstream body to the client chunk by chunk through a usage
    parser. A client disconnect cancels the pump; either way the upstream
    response is closed and the meter is told what was delivered."""

    def __init__(
        self, upstream: UpstreamResponse, parser: UsageParser | None, meter: Meter, family: Family
    ) -> None:
        self.status_code = upstream.status
        self.background = None
        self.raw_headers = [
            (n.lower().encode("latin-1"), v.encode("latin-1"))
            for n, v in downstream_headers(upstream.headers)
        ]
        self._upstream = upstream
        self._parser = parser
        self._meter = meter
        self._family = family
        self._finished = False
        self._sse = any(
            n.lower() == "content-type" and v.startswith("text/event-stream") for n, v in upstream.headers
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = asyncio.create_task(self._pump(send))
        listener = asyncio.create_task(_wait_disconnect(receive))
        await asyncio.wait({pump, listener}, return_when=asyncio.FIRST_COMPLETED)
        if not pump.done() and not self._finished:
            pump.cancel()  # the client hung up: stop reading from upstream
        listener.cancel()
        for result in await asyncio.gather(pump, listener, return_exceptions=True):
            if isinstance(result, UpstreamAborted):
                raise result  # the server drops the connection: the client sees the cut
            if isinstance(result, Exception) and not isinstance(result, OSError):
                log.error("streaming a response failed", exc_info=result)

    async def _pump(self, send: Send) -> None:
        outcome = (
            usage_pb2.EVENT_STATUS_OK if self.status_code < 400 else usage_pb2.EVENT_STATUS_UPSTREAM_ERROR
        )
        parser = self._parser
        first = True
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            try:
                async for chunk in self._upstream.body:
                    out = parser.feed(chunk) if parser else chunk
                    if first:
                        self._meter.ttfb_ms = now_ms() - self._meter._started
                        first = False
                    if out:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
            except httpx.HTTPError as exc:
                log.warning("upstream response ended early: %s", exc.__class__.__name__)
                outcome = usage_pb2.EVENT_STATUS_UPSTREAM_ABORTED
                if not self._sse:
                    raise UpstreamAborted from exc  # a cut JSON body: drop the connection
            tail = parser.flush() if parser else b""
            if outcome == usage_pb2.EVENT_STATUS_UPSTREAM_ABORTED:
                tail += stream_error_event(self._family)  # the SDK raises its usual stream error
            await send({"type": "http.response.body", "body": tail, "more_body": False})
            self._finished = True
        except (asyncio.CancelledError, OSError):
            outcome = usage_pb2.EVENT_STATUS_CLIENT_DISCONNECTED
            raise
        finally:
            # Meter first: it is synchronous, so a cancellation arriving while
            # the upstream connection closes cannot lose the settlement.
            self._meter.done(parser.close() if parser else None, outcome)
            await self._upstream.aclose()


class UpstreamAborted(Exception):
    """The upstream connection broke in the middle of a non-streamed body."""


def stream_error_event(family: Family) -> bytes:
    message = "The upstream provider closed the stream before it finished."
    if family is Family.ANTHROPIC:
        error = {"type": "error", "error": {"type": "api_error", "message": message}}
        return b"\n\nevent: error\ndata: " + json.dumps(error).encode() + b"\n\n"
    if family is Family.GOOGLE:  # google-genai raises on a chunk that is `{"error": …}`
        error = {"error": {"code": 502, "message": message, "status": "UNAVAILABLE"}}
        return b"\n\ndata: " + json.dumps(error).encode() + b"\n\n"
    error = {"error": {"message": message, "type": "server_error", "param": None, "code": "upstream_aborted"}}
    return b"\n\ndata: " + json.dumps(error).encode() + b"\n\n"


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return

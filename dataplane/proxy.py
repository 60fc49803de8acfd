"""One metered request, top to bottom:

    authenticate → read and validate the body → resolve the model → estimate
    → Reserve (402 if refused, before any byte goes upstream) → forward
    → stream the response through the provider's usage parser → Settle

Settlement is queued, never awaited by the response. Whatever happens after
the reservation — upstream refused, upstream died mid-stream, client hung up,
the task cancelled — ends in exactly one Settle or one Release: the request
runs inside a `Lease` (lease.py) whose exit releases what was not settled.
The route table is in routes.py; the response side (MeteredStream) in
metering.py, which tells this module's `Meter` what was delivered."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from dataplane import estimate, ratelimit, requestid
from dataplane.auth import Keys, authenticate
from dataplane.billing import Fallback, bill
from dataplane.budget import Decision, Reserver
from dataplane.config import PROVIDERS, Settings
from dataplane.errors import (
    BadRequest,
    ControlPlaneUnavailable,
    Forbidden,
    GatewayError,
    OverCap,
    Unauthorized,
    UnknownModel,
    UpstreamUnreachable,
)
from dataplane.forward import UpstreamClient, upstream_headers
from dataplane.inbound import RequestView, parse_json, read_body, read_raw
from dataplane.keycache import KeyState
from dataplane.lease import Lease
from dataplane.metering import MeteredStream, now_ms
from dataplane.pricing import Catalog, ModelPrice
from dataplane.providers.families import FAMILY_KEY
from dataplane.providers.usage import ParseContext, Usage
from dataplane.reasoning import may_reason
from dataplane.routes import ROUTES, Route
from dataplane.settlement import Outcome, Settlement
from spendgate.contract import format_usd

log = logging.getLogger(__name__)

__all__ = ["ROUTES", "Gateway", "Prepared", "Route", "handle", "parse_json", "prepare"]


@dataclass
class Gateway:
    """What a worker's request handlers share."""

    settings: Settings
    keys: Keys
    budget: Reserver
    catalog: Catalog
    upstream: UpstreamClient


CATALOG_WAIT_SECONDS = 5.0
# A client that sends this header (true / 1) gets a JSON answer's cost in its headers, once settled.
COST_REQUEST_HEADER = "x-spendgate-include-cost"
COST_WAIT_SECONDS = 3.0  # how long such an answer waits for its settlement before going without them
MAX_UNITS = 2**31  # an output bound billed in place of a count: `n: 10**30` must not reach the ledger
PATH_PARAM = re.compile(r"[A-Za-z0-9_~.:-]+")


def check_path(params: Mapping[str, str]) -> None:
    """The path is forwarded as the client sent it: a parameter of `.`/`..` or with an
    escaped slash would walk out of the route upstream (with the operator's key). The
    route's other segments are literal, so its parameters are all there is to check."""
    for name, value in params.items():
        if not PATH_PARAM.fullmatch(value) or value in (".", ".."):
            raise BadRequest(f"Invalid {name} in the URL path: {value!r}.", param=name)


def check_allowed(key: KeyState, price: ModelPrice) -> None:
    base = price.model.partition(":")[0]  # an image size or a Deepgram variant is its model's
    names = {price.model, base, f"{price.provider}/{price.model}", f"{price.provider}/{base}"}
    if key.allowed_models and not names & key.allowed_models:
        raise Forbidden(f"This API key is not allowed to use the model `{price.model}`.", param="model")


def refusal_message(decision: Decision) -> str:
    if decision.reason == "key_revoked":
        return "This API key has been revoked."
    if decision.reason == "key_expired":
        return "This API key has expired."
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
        f"held for requests in progress and workers' budget blocks ${format_usd(decision.reserved_micros)}; resets {resets}. "
        "Raise the key's cap to continue."
    )


@dataclass
class Prepared:
    key: KeyState
    price: ModelPrice
    body: bytes
    stream: bool
    strip_usage: bool
    view: RequestView

    def fallback(self) -> Fallback:
        """What is billed for a response that never reported its usage (asked only then)."""
        body = self.view.body
        return Fallback(
            input_tokens=-(-self.view.raw_len // 4),
            output_tokens=min(estimate.output_tokens_bound(body, self.price), MAX_UNITS),
            stream=self.stream,
            hidden_reasoning=may_reason(body, self.price.model),
        )


def resolve(route: Route, view: RequestView, model: str, catalog: Catalog) -> ModelPrice:
    """The catalog row for the request: the model, or the first of its variants the catalog has."""
    names = route.candidates(model, view)
    for name in names:
        try:
            return catalog.resolve(name, route.providers)
        except UnknownModel:
            continue
    detail = "" if len(names) == 1 else f" with these options (`{names[0]}`)"
    raise UnknownModel(
        f"The model `{model}`{detail} does not exist or is not in this gateway's catalog.", param="model"
    )


def prepare(raw: bytes, view: RequestView, route: Route, key: KeyState, catalog: Catalog) -> Prepared:
    model, stream = route.model_and_stream(view)
    if not isinstance(model, str) or not model:
        raise BadRequest("You must provide a model parameter.", param=route.model_query or route.model_field)
    price = resolve(route, view, model, catalog)
    check_allowed(key, price)
    body, strip, changed = view.body, False, False
    upstream_model = price.model.partition(":")[0]
    named = body.get(route.model_field)
    rewritable = view.json_body and route.model_query is None and not route.model_in_path
    if rewritable and isinstance(named, str) and named != upstream_model:
        body[route.model_field] = upstream_model  # "openai/gpt-4o" → "gpt-4o" upstream
        changed = True
    forwarded = raw
    if stream and route.inject_usage and PROVIDERS[price.provider].stream_usage_option:
        options = body.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            spliced = None if changed or "stream_options" in body else _with_usage_option(raw)
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
            strip, changed, forwarded = True, spliced is None, spliced or raw
    return Prepared(
        key=key,
        price=price,
        body=json.dumps(body).encode() if changed else forwarded,
        stream=stream,
        strip_usage=strip,
        view=view,
    )


def _with_usage_option(raw: bytes) -> bytes | None:
    """The client's own bytes with `"stream_options": {"include_usage": true}` added as the
    object's last member, or None where that cannot be done in place (an empty object, or a
    body in UTF-16 or UTF-32, whose last byte is not the closing brace). Everything else goes
    upstream exactly as the client wrote it, and nothing is serialised again."""
    body = raw.rstrip(b" \t\r\n")
    if not body.endswith(b"}") or not raw.lstrip(b" \t\r\n").startswith(b"{"):
        return None
    inner = body[:-1].rstrip(b" \t\r\n")
    if inner.endswith(b"{"):
        return None
    return inner + b', "stream_options": {"include_usage": true}}'


def upper_bound(route: Route, prepared: Prepared, settings: Settings) -> int:
    limits = estimate.Limits(
        max_audio_seconds=settings.max_audio_seconds,
        max_referenced_input_tokens=settings.max_referenced_input_tokens,
        strict=prepared.key.strict,
    )
    price = prepared.price.dearest(
        estimate.input_tokens_bound(prepared.view, prepared.price, limits),
        now_ms(),
        str(prepared.view.body.get("service_tier") or ""),
    )
    # Every estimator's bound, however many images or answers a client asks for, must fit the ledger.
    return min(
        (route.estimator or estimate.tokens)(prepared.view, price, limits), estimate.MAX_ESTIMATE_MICROS
    )


def priced_units(price: ModelPrice) -> frozenset[str]:
    rates = {
        "characters": price.characters_micros_per_mchar,
        "audio_seconds": price.audio_seconds_micros_per_msec,
        "images": price.images_micros_per_mimage,
    }
    return frozenset(unit for unit, rate in rates.items() if rate is not None)


class Meter:
    """Turns what a response delivered into the lease's one Settle."""

    def __init__(self, lease: Lease, prepared: Prepared, started_ms: int, status: int) -> None:
        self._lease = lease
        self._p = prepared
        self.started_ms = started_ms
        self._status = status
        self.ttfb_ms = 0

    def done(self, usage: Usage | None, outcome: Outcome) -> None:
        if not self._lease.held:
            return  # not metered
        billed = bill(usage, self._status, self._p.fallback)
        self._lease.settle(
            Settlement(
                request_id=self._lease.request_id,
                key_id=self._p.key.id,
                provider=self._p.price.provider,
                model=self._p.price.model,
                units=billed.units,
                started_ms=self.started_ms,
                latency_ms=now_ms() - self.started_ms,
                ttfb_ms=self.ttfb_ms,
                outcome=outcome,
                http_status=self._status,
                estimated=billed.estimated,
                service_tier=usage.service_tier[:40] if usage is not None else "",
                grant_id=self._lease.grant_id,
            )
        )

    async def cost_headers(self) -> list[tuple[bytes, bytes]]:
        """`x-spendgate-cost-micros` (what the request added to its key's spend) and
        `x-spendgate-remaining-micros` (what the key may still spend; without a cap,
        absent), once the control plane has taken the settlement; none if it has not
        within COST_WAIT_SECONDS."""
        charged = await self._lease.charged(COST_WAIT_SECONDS)  # asked only of a metered answer
        if charged is None:
            return []
        headers = [(b"x-spendgate-cost-micros", str(charged.cost_micros).encode())]
        if charged.key_remaining_micros is not None:
            headers.append((b"x-spendgate-remaining-micros", str(charged.key_remaining_micros).encode()))
        return headers


async def handle(scope: Scope, receive: Receive, send: Send, route: Route, gateway: Gateway) -> None:
    """One request, as an ASGI app: its lease spans everything from the Reserve
    to the last byte, so whatever ends it ends the lease (lease.py)."""
    request = Request(scope, receive)
    scope[FAMILY_KEY] = route.family  # how the app's error handlers answer (errors.family_of)
    async with Lease(gateway.budget, requestid.of(scope)) as lease:
        response = await _admit_and_forward(request, route, gateway, lease)
        await response(scope, receive, send)


async def _admit_and_forward(request: Request, route: Route, gateway: Gateway, lease: Lease) -> MeteredStream:
    """Errors raise: the app's handlers answer them in the route's shape, after the lease released."""
    # The gateway key never travels upstream, in a header or in the URL.
    params = (
        [(k, v) for k, v in request.query_params.multi_items() if k != "key"]
        if request.scope["query_string"]
        else []
    )
    key = await authenticate(request, gateway.keys)
    check_path(request.path_params)
    if not gateway.catalog.loaded.is_set():  # a worker just started: never "no such model"
        try:
            await asyncio.wait_for(gateway.catalog.loaded.wait(), CATALOG_WAIT_SECONDS)
        except TimeoutError:
            raise ControlPlaneUnavailable(
                "The gateway is still loading its price catalog; try again."
            ) from None
    raw = await read_raw(request, gateway.settings.max_body_bytes)
    content_type = request.headers.get("content-type", "")
    view = read_body(route.body_kind, raw, content_type, dict(params), dict(request.path_params))
    prepared = prepare(raw, view, route, key, gateway.catalog)
    request.scope[requestid.ROUTED] = (prepared.price.provider, prepared.price.model, key.id)
    if route.check is not None:
        route.check(view, gateway.settings)
    if route.metered:
        tokens = (
            0
            if key.limits is None or key.limits.tpm is None
            else ratelimit.token_bound(view, prepared.price, route.estimator is None)
        )
        decision = await lease.reserve(key.id, upper_bound(route, prepared, gateway.settings), tokens)
        if not decision.granted:
            request.scope[requestid.REFUSAL] = decision.reason
            if decision.reason in ("key_revoked", "key_expired"):
                raise Unauthorized(refusal_message(decision))
            if decision.rate is not None and decision.reason == "rate_limit":
                raise ratelimit.refusal(decision.rate)
            raise OverCap(refusal_message(decision))

    upstream = gateway.settings.upstreams[prepared.price.provider]
    started = now_ms()
    sent = time.perf_counter()
    try:
        response = await gateway.upstream.send(
            "POST",
            upstream.url(request.scope["path"], urlencode(params)),
            upstream_headers(request.headers.items(), upstream.auth_headers()),
            prepared.body,
        )
        request.scope[requestid.UPSTREAM_SECONDS] = time.perf_counter() - sent
    except GatewayError:
        raise
    except Exception as exc:  # whatever failed, the client gets an answer (the lease releases)
        log.exception("forwarding failed unexpectedly")
        raise UpstreamUnreachable("The gateway could not complete the upstream request.") from exc

    meter = Meter(lease, prepared, started, response.status)
    parser = None
    if response.status < 400:

        def context() -> ParseContext:
            return ParseContext(
                request=view.body,
                query=view.query,
                headers={name.lower(): value for name, value in response.headers},
                stream=prepared.stream,
                upload_bytes=view.upload_bytes,
                priced_units=priced_units(prepared.price),
                model=prepared.price.model,
            )

        parser = route.make_parser(context, prepared.stream, prepared.strip_usage)
    # Not for a stream, SSE or not (Gemini's JSON array): its headers go before its usage.
    priced = (
        lease.held
        and not prepared.stream
        and request.headers.get(COST_REQUEST_HEADER, "").lower() in ("1", "true")
    )
    stream = MeteredStream(response, parser, meter, route.family, gateway.settings.drain_seconds, priced)
    if lease.decision is not None and lease.decision.rate is not None:  # the key's limits, not the operator's
        stream.raw_headers = ratelimit.replace_headers(stream.raw_headers, lease.decision.rate)
    return stream

"""Turning what an upstream response delivered into exactly one Settle.

`MeteredStream` passes the upstream body to the client chunk by chunk through
the route's sans-IO usage parser; `Meter` turns the parser's `Usage` into the
Settle request (asynchronous: the budget queues it). Whatever ends the
response — the last byte, the upstream breaking off, the client hanging up —
the meter is told exactly once, before the upstream connection is closed."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from dataplane.budget import Decision, Reserver
from dataplane.errors import Family
from dataplane.forward import StreamBroken, UpstreamResponse, downstream_headers
from dataplane.providers.usage import Usage, UsageParser
from spendgate.v1 import usage_pb2

if TYPE_CHECKING:
    from dataplane.proxy import Prepared

log = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Meter:
    """Turns what a response delivered into exactly one Settle."""

    def __init__(
        self,
        budget: Reserver,
        request_id: str,
        prepared: Prepared,
        started_ms: int,
        status: int,
        decision: Decision | None,  # None: not metered
    ) -> None:
        self._budget = budget
        self._request_id = request_id
        self._p = prepared
        self._started = started_ms
        self._status = status
        self._decision = decision
        self.ttfb_ms = 0

    def done(self, usage: Usage | None, outcome: int) -> None:
        if self._decision is None:
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
            ),
            self._decision,
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
            except StreamBroken as exc:
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

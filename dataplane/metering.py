"""The response side of a metered request: `MeteredStream` passes the upstream body
to the client chunk by chunk through the route's sans-IO usage parser. Whatever ends
the response — the last byte, the upstream breaking off, the client hanging up — its
`Meter` (proxy.Meter, which turns it into the lease's one Settle) is told exactly once,
before the upstream connection is closed."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from dataplane.forward import StreamBroken, UpstreamResponse, downstream_headers
from dataplane.providers.families import ADAPTERS, Family
from dataplane.providers.usage import Usage, UsageParser
from dataplane.settlement import Outcome

log = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Meter(Protocol):
    """Told once what a response delivered (proxy.Meter turns it into the lease's Settle)."""

    started_ms: int
    ttfb_ms: int

    def done(self, usage: Usage | None, outcome: Outcome) -> None: ...


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
        try:
            await asyncio.wait({pump, listener}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # this request's task: the pump settles what it delivered
            pump.cancel()
            listener.cancel()
            await asyncio.gather(pump, listener, return_exceptions=True)
            raise
        if not pump.done() and not self._finished:
            pump.cancel()  # the client hung up: stop reading from upstream
        listener.cancel()
        for result in await asyncio.gather(pump, listener, return_exceptions=True):
            if isinstance(result, UpstreamAborted):
                raise result  # the server drops the connection: the client sees the cut
            if isinstance(result, Exception) and not isinstance(result, OSError):
                log.error("streaming a response failed", exc_info=result)

    async def _pump(self, send: Send) -> None:
        outcome = Outcome.OK if self.status_code < 400 else Outcome.UPSTREAM_ERROR
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
                        self._meter.ttfb_ms = now_ms() - self._meter.started_ms
                        first = False
                    if out:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
            except StreamBroken as exc:
                log.warning("upstream response ended early: %s", exc.__class__.__name__)
                outcome = Outcome.UPSTREAM_ABORTED
                if not self._sse:
                    raise UpstreamAborted from exc  # a cut JSON body: drop the connection
            tail = parser.flush() if parser else b""
            if outcome == Outcome.UPSTREAM_ABORTED:
                tail += ADAPTERS[self._family].stream_abort()  # the SDK raises its usual stream error
            await send({"type": "http.response.body", "body": tail, "more_body": False})
            self._finished = True
        except (asyncio.CancelledError, OSError):
            outcome = Outcome.CLIENT_DISCONNECTED
            raise
        finally:
            # Meter first: it is synchronous, so a cancellation arriving while
            # the upstream connection closes cannot lose the settlement.
            usage = parser.close() if parser else None
            if outcome is Outcome.CLIENT_DISCONNECTED and usage is not None and usage.complete:
                # The client had the whole answer (an SDK closes as soon as it reads the
                # terminal event, often before the body's last empty frame): not a hang-up.
                outcome = Outcome.OK
            self._meter.done(usage, outcome)
            await self._upstream.aclose()


class UpstreamAborted(Exception):
    """The upstream connection broke in the middle of a non-streamed body."""


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return

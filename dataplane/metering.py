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
from starlette.types import Message, Receive, Scope, Send

from dataplane.errors import UpstreamUnreachable
from dataplane.forward import StreamBroken, UpstreamResponse, passed_on
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

    async def cost_headers(self) -> list[tuple[bytes, bytes]]:
        """Asked only of a buffered answer, after `done`: what it cost, as response headers."""
        ...


class MeteredStream(Response):
    """Streams an upstream body to the client chunk by chunk through a usage parser,
    in the request's own task. The upstream response is always closed and the meter
    always told what was delivered.

    A client that leaves does not stop the reading: the provider did (a JSON body) or
    is doing (a stream) the work, so the body is read to its end and billed from the
    provider's own counts. A JSON body is read to its end unconditionally (bounded by
    the upstream read timeout); a stream is drained for at most `drain_seconds` after
    the client left, then cut and billed as estimated (billing.py). Only a stream has
    a listener for the disconnect: what it changes is when the drain ends."""

    def __init__(
        self,
        upstream: UpstreamResponse,
        parser: UsageParser | None,
        meter: Meter,
        family: Family,
        drain_seconds: float,
        priced: bool = False,
    ) -> None:
        self.status_code = upstream.status
        self.background = None
        self.raw_headers = []  # forward.downstream_headers, lowercased and encoded, in the same pass:
        content_type, length = "", b""
        for name, value in upstream.headers:
            lower = name.lower()
            if lower == "content-type" and not content_type:
                content_type = value
            elif lower == "content-length" and not length and value.isdigit():
                length = value.encode("latin-1")
            if passed_on(lower):
                self.raw_headers.append((lower.encode("latin-1"), value.encode("latin-1")))
        self._upstream = upstream
        self._parser = parser
        self._meter = meter
        self._family = family
        self._drain_seconds = drain_seconds
        self._gone = False  # the client left
        self._drain: asyncio.TimerHandle | None = None  # then, when reading its stream stops
        self._drained = False  # and it has
        self._unseen = False  # and the upstream sent more after it had
        self._sse = content_type.startswith("text/event-stream")
        # A JSON answer whose client asked for its cost is held back until it is settled:
        # the cost goes in its headers, which would otherwise have left before its usage came.
        self._buffered = priced and _is_json(content_type)
        if length and not self._sse:  # passed on byte for byte: its length holds (no chunked framing)
            self.raw_headers.append((b"content-length", length))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._sse:
            await self._pump(send)
            return
        # The drain's end cancels this task, as asyncio.timeout would; but the timer is
        # set only once the client has left, not made and entered for every stream.
        task = asyncio.current_task()
        assert task is not None
        listener = asyncio.create_task(self._listen(receive, task))
        try:
            await self._pump(send)
        except asyncio.CancelledError:
            if self._drained and task.uncancel() == 0:  # ours, and no one else's besides
                log.info("stopped reading an abandoned stream after %.0f s", self._drain_seconds)
                return
            raise
        finally:
            listener.cancel()
            if self._drain is not None:
                self._drain.cancel()

    async def _listen(self, receive: Receive, task: asyncio.Task[object]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._gone = True
        self._drain = asyncio.get_running_loop().call_later(self._drain_seconds, self._end_drain, task)

    def _end_drain(self, task: asyncio.Task[object]) -> None:
        self._drained = True
        task.cancel()

    async def _pump(self, send: Send) -> None:
        outcome = Outcome.OK if self.status_code < 400 else Outcome.UPSTREAM_ERROR
        parser = self._parser
        first = True
        held: list[bytes] | None = [] if self._buffered else None
        metered = False
        try:
            if held is None:
                await self._send(send, self._start(self.raw_headers))
            try:
                async for chunk in self._upstream.body:
                    out = parser.feed(chunk) if parser else chunk
                    if first:
                        self._meter.ttfb_ms = now_ms() - self._meter.started_ms
                        first = False
                    if out and held is not None:
                        held.append(out)
                    elif out:
                        await self._send(send, {"type": "http.response.body", "body": out, "more_body": True})
            except StreamBroken as exc:
                log.warning("upstream response ended early: %s", exc.__class__.__name__)
                outcome = Outcome.UPSTREAM_ABORTED
                if held is not None:  # nothing sent yet: a provider-shaped 502
                    raise UpstreamUnreachable("The provider's answer broke off before its end.") from exc
                if not self._sse:
                    raise UpstreamAborted from exc  # a cut JSON body: drop the connection
            tail = parser.flush() if parser else b""
            if outcome == Outcome.UPSTREAM_ABORTED:
                tail += ADAPTERS[self._family].stream_abort()  # the SDK raises its usual stream error
            if held is not None:
                metered = True
                self._meter.done(parser.close() if parser else None, outcome)
                await self._send(send, self._start([*self.raw_headers, *await self._meter.cost_headers()]))
                tail = b"".join(held) + tail
            await self._send(send, {"type": "http.response.body", "body": tail, "more_body": False})
        except asyncio.CancelledError:  # the drain's end, or the worker's shutdown
            outcome = Outcome.CLIENT_DISCONNECTED
            raise
        finally:
            if not metered:
                # Meter first: it is synchronous, so a cancellation arriving while
                # the upstream connection closes cannot lose the settlement.
                usage = parser.close() if parser else None
                if outcome is Outcome.OK and self._unseen:
                    outcome = Outcome.CLIENT_DISCONNECTED  # left mid-answer (and drained)
                elif outcome is Outcome.CLIENT_DISCONNECTED and not self._unseen and usage and usage.complete:
                    # The client had the whole answer (an SDK closes as soon as it reads the
                    # terminal event, often before the body's last empty frame): not a hang-up.
                    outcome = Outcome.OK
                self._meter.done(usage, outcome)
            await self._upstream.aclose()

    def _start(self, headers: list[tuple[bytes, bytes]]) -> Message:
        return {"type": "http.response.start", "status": self.status_code, "headers": headers}

    async def _send(self, send: Send, message: Message) -> None:
        """To the client while it is there; what it would have missed is noted."""
        if self._gone:
            self._unseen = self._unseen or bool(message.get("body"))
            return
        try:
            await send(message)
        except OSError:  # a server that raises on a closed connection (Hypercorn drops the bytes)
            self._gone = self._unseen = True


def _is_json(content_type: str) -> bool:
    """Only a JSON answer is held for its cost: audio (even unflagged chunked audio, such as
    ElevenLabs' /stream) goes on as it comes."""
    kind = content_type.partition(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


class UpstreamAborted(Exception):
    """The upstream connection broke in the middle of a non-streamed body."""

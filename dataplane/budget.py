"""Reserve before forwarding, settle after — the data plane's side of the ledger.

`Reserve` is the one control-plane round trip on a request's critical path.
Settlements go on a queue that background tasks drain, so no response waits
for its usage to be written; a failed Settle is retried (it is idempotent by
request id), and the reservation's lease bounds what an unsettled request can
hold."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

import grpc
from spendgate.v1 import usage_pb2, usage_pb2_grpc

from dataplane.errors import ControlPlaneUnavailable

log = logging.getLogger(__name__)

SETTLE_WORKERS = 8
SETTLE_ATTEMPTS = 8


@dataclass(frozen=True)
class Decision:
    granted: bool
    reason: str
    cap_micros: int | None
    spent_micros: int
    reserved_micros: int
    period_reset_ms: int


class Reserver(Protocol):
    async def reserve(self, key_id: str, request_id: str, amount_micros: int) -> Decision: ...

    def settle(self, request: usage_pb2.SettleRequest) -> None: ...

    def release(self, request_id: str) -> None: ...


REASONS = {
    usage_pb2.REFUSAL_REASON_KEY_CAP: "key_cap",
    usage_pb2.REFUSAL_REASON_WALLET: "wallet",
    usage_pb2.REFUSAL_REASON_KEY_REVOKED: "key_revoked",
}


class GrpcBudget:
    def __init__(
        self, stub: usage_pb2_grpc.UsageServiceStub, metadata: tuple[tuple[str, str], ...], ttl_ms: int
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._ttl_ms = ttl_ms
        self._queue: asyncio.Queue[usage_pb2.SettleRequest | str] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._drain()) for _ in range(SETTLE_WORKERS)]

    async def stop(self, timeout: float = 10.0) -> None:
        """Wait (bounded) for queued settlements, then stop the workers."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.error("%d settlement(s) still queued at shutdown", self._queue.qsize())
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def reserve(self, key_id: str, request_id: str, amount_micros: int) -> Decision:
        request = usage_pb2.ReserveRequest(
            key_id=key_id, request_id=request_id, amount_micros=amount_micros, ttl_ms=self._ttl_ms
        )
        try:
            r = await self._stub.Reserve(request, metadata=self._metadata, timeout=5)
        except grpc.aio.AioRpcError as exc:
            raise ControlPlaneUnavailable("the gateway cannot reach its control plane; try again") from exc
        return Decision(
            granted=r.granted,
            reason=REASONS.get(r.reason, ""),
            cap_micros=r.cap_micros if r.HasField("cap_micros") else None,
            spent_micros=r.spent_micros,
            reserved_micros=r.reserved_micros,
            period_reset_ms=r.period_reset_ms,
        )

    def settle(self, request: usage_pb2.SettleRequest) -> None:
        self._queue.put_nowait(request)

    def release(self, request_id: str) -> None:
        self._queue.put_nowait(request_id)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def _drain(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._send(item)
            finally:
                self._queue.task_done()

    async def _send(self, item: usage_pb2.SettleRequest | str) -> None:
        delay = 0.05
        for attempt in range(1, SETTLE_ATTEMPTS + 1):
            try:
                if isinstance(item, str):
                    await self._stub.Release(
                        usage_pb2.ReleaseRequest(request_id=item), metadata=self._metadata, timeout=5
                    )
                else:
                    await self._stub.Settle(item, metadata=self._metadata, timeout=5)
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                    log.error("settlement refused by the control plane: %s", exc.details())
                    return
                log.warning("settlement attempt %d failed (%s); retrying", attempt, exc.code().name)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        log.error(
            "settlement for %s dropped after %d attempts", getattr(item, "request_id", item), SETTLE_ATTEMPTS
        )

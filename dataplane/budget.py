"""Reserve before forwarding, settle after — the data plane's side of the ledger.

`Reserve` is the one control-plane round trip on a request's critical path.
Settlements go on a queue that background tasks drain, so no response waits
for its usage to be written. They pass through a durable spool (spool.py)
first and are retried until the control plane takes them (Settle is
idempotent by request id); the reservation's lease bounds what an unsettled
request holds meanwhile."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

import grpc

from dataplane.errors import ControlPlaneUnavailable
from dataplane.spool import Item, Spool, item_id
from spendgate.v1 import usage_pb2, usage_pb2_grpc

log = logging.getLogger(__name__)

SETTLE_CONCURRENCY = 64
SPOOL_BATCH = 256
ORPHAN_SCAN_SECONDS = 30.0


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
    """Reserve over gRPC; settle and release through the spool.

    Stage one batches queued settlements into the spool (one write and one
    fsync per batch, off the event loop); stage two sends each to the control
    plane, retrying with backoff until it is taken, then marks it done. The
    first stage never waits on the control plane, so an outage only grows
    the spool."""

    def __init__(
        self,
        stub: usage_pb2_grpc.UsageServiceStub,
        metadata: tuple[tuple[str, str], ...],
        ttl_ms: int,
        spool: Spool | None = None,
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._ttl_ms = ttl_ms
        self._spool = spool
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._senders: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(SETTLE_CONCURRENCY)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self._spool is not None:
            self._send_all(self._spool.claim_orphans())
        self._tasks = [asyncio.create_task(self._batch_forever())]
        if self._spool is not None:
            self._tasks.append(asyncio.create_task(self._adopt_orphans_forever()))

    async def stop(self, timeout: float = 10.0) -> None:
        """Give queued and in-flight settlements a bounded time to land; what is
        left stays in the spool for the next worker to replay."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (self._queue.qsize() or self._senders) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for task in [*self._tasks, *self._senders]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._senders, return_exceptions=True)
        if self._spool is not None:
            self._spool.close()

    @property
    def pending(self) -> int:
        return self._queue.qsize() + len(self._senders)

    async def reserve(self, key_id: str, request_id: str, amount_micros: int) -> Decision:
        request = usage_pb2.ReserveRequest(
            key_id=key_id, request_id=request_id, amount_micros=amount_micros, ttl_ms=self._ttl_ms
        )
        try:
            r = await self._stub.Reserve(request, metadata=self._metadata, timeout=5)
        except grpc.aio.AioRpcError as exc:
            log.warning("Reserve failed: %s %s", exc.code().name, exc.details())
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

    async def _batch_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < SPOOL_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if self._spool is not None:
                await asyncio.to_thread(self._spool.append, batch)
            self._send_all(batch)

    async def _adopt_orphans_forever(self) -> None:
        assert self._spool is not None
        while True:
            await asyncio.sleep(ORPHAN_SCAN_SECONDS)
            self._send_all(await asyncio.to_thread(self._spool.claim_orphans))

    def _send_all(self, items: list[Item]) -> None:
        for item in items:
            task = asyncio.create_task(self._deliver(item))
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)

    async def _deliver(self, item: Item) -> None:
        async with self._slots:
            await self._send(item)
        if self._spool is not None:
            self._spool.done([item_id(item)])

    async def _send(self, item: Item) -> None:
        """Until the control plane takes it: Settle and Release are idempotent."""
        delay = 0.05
        attempt = 0
        while True:
            attempt += 1
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
                    log.error("settlement %s refused by the control plane: %s", item_id(item), exc.details())
                    return
                if attempt in (1, 10) or attempt % 100 == 0:
                    log.warning(
                        "settlement %s not delivered yet (%s); retrying", item_id(item), exc.code().name
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

"""Reserve before forwarding, settle after — the data plane's side of the ledger.

A key's first requests on a worker each `Reserve` over gRPC, the one
control-plane round trip a request may have on its critical path. A key
that stays busy on a worker earns a **grant**: a block of its budget (at most
a quarter of what it has left, only if it fits whole) that the worker then
admits requests against locally, each only if its whole estimate fits what is
left of the block. So grants never let a key overrun its cap; the per-request
path keeps the brief's rule (admit while anything is left). A grant goes back
— its unused part at once, the rest once its requests have settled — when it
runs short, when it has been idle a little while, when it is due for renewal,
when the key changes (WatchKeys), and when the worker stops. If the worker
dies, the grant's lease expires like any reservation.

For a key with rate limits, a grant also holds a slice of them (requests, tokens,
slots: ratelimit.Slice), and a local admission needs room in the slice too; the
slice goes back with the grant. Without a slice (a small limit) there is no grant.

Settlements never hold up a response. They are spooled (spool.py) and sent in
batches, one `SettleBatch` RPC and one control-plane transaction for many,
retried until taken (Settle is idempotent by request id); the reservation's
lease bounds what an unsettled request holds meanwhile. The control plane's
answer carries each request's cost, which is when a grant gets the unspent
part of that request's estimate back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol

import grpc

from dataplane.errors import ControlPlaneUnavailable
from dataplane.ratelimit import Slice, Status
from dataplane.settlement import Charged, Item, Refusal, Release, Settlement, refusal_from_pb
from dataplane.spool import DeadLetter, DeadLetters, Spool, item_id
from spendgate.contract import enum_names, token_count
from spendgate.v1 import usage_pb2, usage_pb2_grpc

log = logging.getLogger(__name__)

SETTLE_BATCH = 256
# How long the first spooled settlement of a batch waits for company before it
# is sent: at low load this turns one SettleBatch transaction per request into
# one per batch. (It is durable in the spool meanwhile.)
SETTLE_LINGER_SECONDS = 0.1
SPOOL_SYNC_SECONDS = 0.1  # group commit: the spool is fsync'd this often when written to
UNBATCHED_SECONDS = 60.0  # after an UNIMPLEMENTED SettleBatch, how long to settle one by one
ORPHAN_SCAN_SECONDS = 30.0

GRANT_HOT = 3  # per-request reservations of one key within a second that earn it a grant
GRANT_REQUESTS = 100  # a grant asks for this many of the triggering request's estimates (+ 2x in flight)
GRANT_MIN_REQUESTS = 4  # ... and is not worth having below this many
GRANT_IDLE_SECONDS = 2.0
GRANT_RENEW_SECONDS = 30.0
GRANT_PREFETCH_SECONDS = 2.0  # a grant's successor is asked for this long before it is due
# A grant's lease: what a dead worker's grant keeps from the key until it expires.
GRANT_TTL_MS = 120_000
GRANT_RETRY_SECONDS = 1.0
TEND_SECONDS = 0.5  # how often grants are tended and leases in use renewed
# A settlement refused for a reason that may pass (a key this control plane does not know
# yet) is sent again this often, for this long, before it becomes a dead letter.
RETRYABLE_REFUSALS = frozenset({Refusal.UNKNOWN_KEY})
REFUSED_RETRY_SECONDS = 5.0
REFUSED_RETRY_FOR_SECONDS = 300.0
# A Reserve refused while this worker still has the key's finished requests to settle is
# asked again once they are (at most this long): what they held is not in flight any more.
SETTLED_FIRST_SECONDS = 2.0
PARALLEL_RECHECK_SECONDS = 0.2  # a Reserve refused for want of a slot is asked once more after this


@dataclass(eq=False)
class Grant:
    id: str
    key_id: str
    size: int
    balance: int  # not yet promised to a request
    renew_at: float
    last_used: float
    last_amount: int = 0  # the latest estimate admitted: what the next grant is sized by
    outstanding: int = 0  # admitted requests whose settlement the control plane has not taken yet
    retired: bool = False
    slice: Slice | None = None  # of a rate-limited key's limits (ratelimit.py)
    last_tokens: int = 0
    lease_until: float = 0.0  # when the control plane lets its lease lapse unless renewed


@dataclass
class _Own:
    """A reservation of this worker's own while its request runs: the Reserve that renews it."""

    renewal: usage_pb2.ReserveRequest
    lease_end: float


class Decision(NamedTuple):
    """(A tuple: one is made per request.)"""

    granted: bool
    reason: str
    cap_micros: int | None
    spent_micros: int
    reserved_micros: int
    period_reset_ms: int
    grant: Grant | None = None  # admitted against this worker's grant, not a reservation of its own
    amount_micros: int = 0
    tokens: int = 0  # counted against the key's tokens per minute
    rate: Status | None = None  # a rate-limited key's (ratelimit.py)


class Reserver(Protocol):
    def admit_now(self, key_id: str, amount_micros: int, tokens: int = 0) -> Decision | None:
        """Admit against what this worker already holds, without waiting, if it can (else None)."""

    async def reserve(
        self, key_id: str, request_id: str, amount_micros: int, tokens: int = 0
    ) -> Decision: ...

    def settle(self, settlement: Settlement, decision: Decision) -> None: ...

    def release(self, request_id: str, decision: Decision | None) -> None:
        """Give a hold back; with no decision (a Reserve cut short), release by id."""

    async def charged(self, request_id: str, timeout: float) -> Charged | None:
        """What a request just settled was charged, once the control plane has taken its
        settlement (sent at once, not after the batch's linger); None if that takes longer
        than `timeout` or the settlement was refused. Call it right after `settle`."""


def _fits(grant: Grant, amount_micros: int, now: float, tokens: int = 0) -> bool:
    return (
        grant.balance >= amount_micros
        and now < grant.renew_at
        and not grant.retired
        and (grant.slice is None or grant.slice.fits(tokens))
    )


REASONS = enum_names(usage_pb2.RefusalReason)  # "key_cap", "wallet", "key_revoked"


class GrpcBudget:
    """Reserve over gRPC or against a grant; settle and release through the spool.

    Stage one writes queued settlements to the spool, a batch at a time
    (fsync'd every SPOOL_SYNC_SECONDS, off the event loop); stage two sends
    them to the control plane in batches, retrying with backoff until taken,
    then marks them done.
    The first stage never waits on the control plane, so an outage only grows
    the spool."""

    def __init__(
        self,
        stub: usage_pb2_grpc.UsageServiceAsyncStub,
        metadata: tuple[tuple[str, str], ...],
        ttl_ms: int,
        spool: Spool | None = None,
        grants: bool = True,
        on_reserve: Callable[[float], None] | None = None,  # each Reserve RPC's seconds (metrics.py)
    ) -> None:
        self._stub = stub
        self._on_reserve = on_reserve
        self._metadata = metadata
        self._ttl_ms = ttl_ms
        self._spool = spool
        self._grants_on = grants
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._outbox: asyncio.Queue[Item] = asyncio.Queue()
        self._sending = 0
        self._reserving = 0  # Reserve RPCs on their way
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._grants: dict[str, Grant] = {}  # key id -> the grant requests are admitted against
        self._holds: dict[str, tuple[Grant, int, int]] = {}  # request id -> (grant, estimate, tokens)
        self._limited: set[str] = set()  # key ids whose Reserve said they have rate limits
        self._fetching: dict[str, asyncio.Future[None]] = {}  # key id -> done when its grant request is
        self._not_before: dict[str, float] = {}  # key id -> no grant asked for before then
        self._recent: dict[str, tuple[float, int]] = {}  # key id -> (window start, reservations)
        self._changes: dict[str, int] = {}  # key id -> changes seen (WatchKeys)
        self._unbatched_until = 0.0  # settle one by one until then (the control plane lacks SettleBatch)
        self._refused_since: dict[str, float] = {}  # request id -> first refusal (retryable ones)
        self._own: dict[str, _Own] = {}  # request id -> its reservation of its own, held
        self._held_grants: set[Grant] = set()  # not yet released for good (their leases are renewed)
        self._settling: dict[str, str] = {}  # request id -> key id: finished, not yet taken
        self._unsettled: dict[str, int] = {}  # key id -> how many of those it has
        self._all_settled: dict[str, asyncio.Event] = {}  # key id -> set when none is left
        self._hurry = asyncio.Event()  # send the next batch without waiting for company
        self._charges: dict[str, asyncio.Future[Charged | None]] = {}  # request id -> its charge, awaited
        self._dead_letters = DeadLetters(spool.directory) if spool is not None else None
        self.dead_lettered = 0  # settlements this worker has dead-lettered

    def start(self) -> None:
        if self._spool is not None:
            self._send_all(self._spool.claim_orphans())
        self._tasks = [
            asyncio.create_task(self._spool_forever()),
            asyncio.create_task(self._deliver_forever()),
            asyncio.create_task(self._tend_grants_forever()),
        ]
        if self._spool is not None:
            self._tasks.append(asyncio.create_task(self._adopt_orphans_forever()))
            self._tasks.append(asyncio.create_task(self._sync_spool_forever()))

    async def stop(self, timeout: float = 10.0) -> None:
        """Give queued and in-flight settlements a bounded time to land and hand
        the grants back; what is left stays in the spool for the next worker."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Reserves and grant requests still on their way end first: what they hold is released below.
        while (self.pending or self._reserving or self._fetching) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for grant in list(self._grants.values()):
            self._spawn(self._retire(grant))
        while self._background and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for task in [*self._tasks, *self._background]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._background, return_exceptions=True)
        for successor in self._fetching.values():  # a grant request cancelled before it began
            if not successor.done():
                successor.set_result(None)
        if self._spool is not None:
            self._spool.close()

    @property
    def pending(self) -> int:
        return self._queue.qsize() + self._outbox.qsize() + self._sending

    # admission --------------------------------------------------------------

    def admit_now(self, key_id: str, amount_micros: int, tokens: int = 0) -> Decision | None:
        """A busy key's request, admitted against this worker's grant: no await, so nothing
        can cancel it half-way (and no task is needed to shield it)."""
        grant = self._grants.get(key_id)
        now = asyncio.get_running_loop().time()
        if grant is None or not _fits(grant, amount_micros, now, tokens):
            return None
        grant.balance -= amount_micros
        grant.outstanding += 1
        grant.last_used = now
        grant.last_amount = amount_micros
        rate = None
        if grant.slice is not None:
            rate = grant.slice.take(tokens)
            grant.last_tokens = tokens
        if (
            grant.balance < (grant.outstanding + GRANT_REQUESTS // 4) * amount_micros
            or now >= grant.renew_at - GRANT_PREFETCH_SECONDS
            or (grant.slice is not None and grant.slice.low())
        ):
            # The next one, before this runs out or is due: sized for what is in flight, too.
            self._want_grant(key_id, amount_micros, grant.outstanding, tokens)
        return Decision(True, "", None, 0, 0, 0, grant, amount_micros, tokens, rate)

    async def reserve(self, key_id: str, request_id: str, amount_micros: int, tokens: int = 0) -> Decision:
        loop = asyncio.get_running_loop()
        grant = self._grants.get(key_id)
        if grant is not None and not _fits(grant, amount_micros, loop.time(), tokens):
            successor = self._fetching.get(key_id)
            if successor is not None:  # on its way: cheaper to wait for it than to reserve alone
                await asyncio.shield(successor)
                grant = self._grants.get(key_id)
        now = loop.time()
        if grant is not None:
            admitted = self.admit_now(key_id, amount_micros, tokens)
            if admitted is not None:
                return admitted
            # Its unused part goes back inside the Reserve, before the control plane decides.
            unused = self._withdraw(grant)
            decision = await self._reserve(key_id, request_id, amount_micros, grant.id, unused, tokens)
            if grant.outstanding == 0:  # nothing in flight against it: end it now
                self._spawn(self._release_grant(grant, None))
            return decision
        decision = await self._reserve(key_id, request_id, amount_micros, tokens=tokens)
        if (
            not decision.granted
            and decision.reason not in ("key_revoked", "key_expired")  # final: settling changes nothing
            and self._unsettled.get(key_id)
            and (decision.rate is None or decision.rate.refused != "requests")
        ):
            # What the key's finished requests held still counts at the control plane until
            # their settlements land: land them now, then ask again (never a false 402 or 429).
            await self._settle_key_now(key_id)
            decision = await self._reserve(key_id, request_id, amount_micros, tokens=tokens)
        if not decision.granted and decision.rate is not None and decision.rate.refused == "parallel":
            # A slot a request has just given back on another worker is free once its
            # settlement lands (sent at once, see settle): look again after that long.
            await asyncio.sleep(PARALLEL_RECHECK_SECONDS)
            decision = await self._reserve(key_id, request_id, amount_micros, tokens=tokens)
        # (A grant may have arrived while this reservation was on its way.)
        if decision.granted and self._hot(key_id, now) and key_id not in self._grants:
            self._want_grant(key_id, amount_micros, 0, tokens)
        return decision

    async def _reserve(
        self,
        key_id: str,
        request_id: str,
        amount_micros: int,
        grant_id: str = "",
        unused: int = 0,
        tokens: int = 0,
    ) -> Decision:
        request = usage_pb2.ReserveRequest(
            key_id=key_id,
            request_id=request_id,
            amount_micros=amount_micros,
            ttl_ms=self._ttl_ms,
            return_grant_id=grant_id if unused else "",
            return_micros=unused,
            tokens=tokens,
        )
        self._reserving += 1
        sent = time.perf_counter()
        try:
            r = await self._stub.Reserve(request, metadata=self._metadata, timeout=5)
        except grpc.aio.AioRpcError as exc:
            log.warning("Reserve failed: %s %s", exc.code().name, exc.details())
            raise ControlPlaneUnavailable("the gateway cannot reach its control plane; try again") from exc
        finally:
            self._reserving -= 1
            if self._on_reserve is not None:
                self._on_reserve(time.perf_counter() - sent)
        if r.granted:
            renewal = usage_pb2.ReserveRequest(
                key_id=key_id,
                request_id=request_id,
                amount_micros=amount_micros,
                ttl_ms=self._ttl_ms,
                tokens=tokens,
            )
            self._own[request_id] = _Own(renewal, asyncio.get_running_loop().time() + self._ttl_ms / 1000)
        rate = Status.from_pb(r.rate) if r.HasField("rate") else None
        if rate is not None:
            self._limited.add(key_id)
        else:
            self._limited.discard(key_id)
        return Decision(
            granted=r.granted,
            reason=REASONS.get(r.reason, ""),
            cap_micros=r.cap_micros if r.HasField("cap_micros") else None,
            spent_micros=r.spent_micros,
            reserved_micros=r.reserved_micros,
            period_reset_ms=r.period_reset_ms,
            amount_micros=amount_micros,
            tokens=tokens,
            rate=rate,
        )

    def settle(self, settlement: Settlement, decision: Decision) -> None:
        if decision.grant is not None:
            if settlement.grant_id != decision.grant.id:  # (proxy.Meter names it already)
                settlement = replace(settlement, grant_id=decision.grant.id)
            self._holds[settlement.request_id] = (decision.grant, decision.amount_micros, decision.tokens)
            if decision.grant.slice is not None:
                decision.grant.slice.finished()  # its slot, at once: the request is over
        self._finished(settlement.request_id)
        self._queue.put_nowait(settlement)
        if decision.rate is not None and decision.grant is None:
            self._hurry.set()  # its slot is held at the control plane until this lands

    def release(self, request_id: str, decision: Decision | None) -> None:
        if decision is None or decision.grant is None:
            self._finished(request_id)
            self._queue.put_nowait(Release(request_id))
            if decision is not None and decision.rate is not None:
                self._hurry.set()
        else:  # nothing reached the provider: the whole estimate goes back to the grant
            if decision.grant.slice is not None:
                decision.grant.slice.released(decision.tokens)
            self._give_back(decision.grant, decision.amount_micros)

    async def charged(self, request_id: str, timeout: float) -> Charged | None:
        charge = self._charges.setdefault(request_id, asyncio.get_running_loop().create_future())
        self._hurry.set()
        try:
            return await asyncio.wait_for(charge, timeout)
        except TimeoutError:
            return None
        finally:
            self._charges.pop(request_id, None)

    def _finished(self, request_id: str) -> None:
        """A request that held a reservation of its own ended: count it until it is taken."""
        own = self._own.pop(request_id, None)
        if own is not None:
            key_id = own.renewal.key_id
            self._settling[request_id] = key_id
            self._unsettled[key_id] = self._unsettled.get(key_id, 0) + 1

    def _taken(self, request_id: str) -> None:
        key_id = self._settling.pop(request_id, None)
        if key_id is None:
            return
        left = self._unsettled[key_id] - 1
        if left:
            self._unsettled[key_id] = left
            return
        del self._unsettled[key_id]
        event = self._all_settled.pop(key_id, None)
        if event is not None:
            event.set()

    async def _settle_key_now(self, key_id: str) -> None:
        event = self._all_settled.setdefault(key_id, asyncio.Event())
        self._hurry.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), SETTLED_FIRST_SECONDS)

    def key_changed(self, key_id: str) -> None:
        """A revocation or cap change: stop admitting against the key's grant."""
        self._changes[key_id] = self._changes.get(key_id, 0) + 1
        grant = self._grants.get(key_id)
        if grant is not None:
            self._spawn(self._retire(grant))

    # grants -----------------------------------------------------------------

    def _hot(self, key_id: str, now: float) -> bool:
        if not self._grants_on:
            return False
        start, count = self._recent.get(key_id, (now, 0))
        if now - start > 1.0:
            start, count = now, 0
        self._recent[key_id] = (start, count + 1)
        return count + 1 >= GRANT_HOT

    def _want_grant(self, key_id: str, amount_micros: int, in_flight: int = 0, tokens: int = 0) -> None:
        now = asyncio.get_running_loop().time()
        if key_id in self._fetching or self._not_before.get(key_id, 0.0) > now or amount_micros <= 0:
            return
        done = self._fetching[key_id] = asyncio.get_running_loop().create_future()
        self._spawn(self._fetch_grant(key_id, amount_micros, in_flight, done, tokens))

    async def _fetch_grant(
        self, key_id: str, amount_micros: int, in_flight: int, done: asyncio.Future[None], tokens: int = 0
    ) -> None:
        """Ask for a grant and install it; `done` tells those waiting for it either way."""
        changes = self._changes.get(key_id, 0)
        request = usage_pb2.GrantRequest(
            key_id=key_id,
            grant_id=f"grant-{uuid.uuid4().hex}",
            want_micros=amount_micros * (GRANT_REQUESTS + 2 * in_flight),
            min_micros=amount_micros * GRANT_MIN_REQUESTS,
            ttl_ms=min(self._ttl_ms, GRANT_TTL_MS),
        )
        if key_id in self._limited:  # a slice of its limits too, sized like the block
            wanted = GRANT_REQUESTS + 2 * in_flight
            request.want_slice.CopyFrom(
                usage_pb2.RateSlice(
                    requests=wanted, tokens=tokens * wanted, slots=max(GRANT_MIN_REQUESTS, in_flight)
                )
            )
            request.min_slice.CopyFrom(
                usage_pb2.RateSlice(requests=GRANT_MIN_REQUESTS, tokens=tokens * GRANT_MIN_REQUESTS, slots=1)
            )
        try:
            try:
                r = await self._stub.Grant(request, metadata=self._metadata, timeout=5)
            except grpc.aio.AioRpcError as exc:
                log.warning("Grant failed: %s %s", exc.code().name, exc.details())
                r = usage_pb2.GrantResponse()
            now = asyncio.get_running_loop().time()
            if not r.granted:
                self._not_before[key_id] = now + GRANT_RETRY_SECONDS
                return
            grant = Grant(
                id=request.grant_id,
                key_id=key_id,
                size=r.amount_micros,
                balance=r.amount_micros,
                renew_at=now + min(GRANT_RENEW_SECONDS, request.ttl_ms / 2000),
                last_used=now,
                slice=Slice.from_pb(r.slice, r.rate) if r.HasField("rate") else None,
                lease_until=now + request.ttl_ms / 1000,
            )
            self._held_grants.add(grant)
            if self._changes.get(key_id, 0) != changes:  # the key changed meanwhile: granted on old terms
                self._spawn(self._retire(grant))
                return
            old = self._grants.get(key_id)
            self._grants[key_id] = grant
            if old is not None:
                self._spawn(self._retire(old))
        finally:
            del self._fetching[key_id]
            done.set_result(None)

    def _withdraw(self, grant: Grant) -> int:
        """No more admissions against it; returns its unused part, for the caller to hand back."""
        grant.retired = True
        if self._grants.get(grant.key_id) is grant:
            del self._grants[grant.key_id]
        unused, grant.balance = max(grant.balance, 0), 0
        return unused

    async def _retire(self, grant: Grant) -> None:
        """No more admissions against it; its unused part goes back now, the
        rest once its admitted requests have been settled."""
        if grant.retired:
            return
        unused = self._withdraw(grant)
        if grant.outstanding == 0:
            await self._release_grant(grant, None)
        elif unused:
            await self._release_grant(grant, unused)

    async def _release_grant(self, grant: Grant, amount_micros: int | None) -> None:
        """Best effort: if the control plane cannot take it, the grant's lease expires."""
        request = usage_pb2.ReleaseRequest(request_id=grant.id, amount_micros=amount_micros)
        if amount_micros is None:
            self._held_grants.discard(grant)
        if amount_micros is None and grant.slice is not None:
            request.return_slice.CopyFrom(grant.slice.unused())  # its end: what its slice did not use
        try:
            await self._stub.Release(request, metadata=self._metadata, timeout=5)
        except grpc.aio.AioRpcError as exc:
            log.warning("releasing grant %s failed (%s); its lease will expire", grant.id, exc.code().name)

    def _give_back(self, grant: Grant, unspent: int) -> None:
        grant.outstanding -= 1
        if not grant.retired:
            grant.balance += unspent
        elif grant.outstanding == 0:
            self._spawn(self._release_grant(grant, None))

    async def _tend_grants_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TEND_SECONDS)
            now = loop.time()
            for grant in list(self._grants.values()):
                if now - grant.last_used > GRANT_IDLE_SECONDS or now >= grant.renew_at:
                    self._spawn(self._retire(grant))
                elif now >= grant.renew_at - GRANT_PREFETCH_SECONDS and grant.last_amount:
                    # The successor, before it is due.
                    self._want_grant(grant.key_id, grant.last_amount, 0, grant.last_tokens)
            self._renew_leases(now)
            self._recent = {k: v for k, v in self._recent.items() if now - v[0] <= 1.0}
            self._not_before = {k: t for k, t in self._not_before.items() if t > now}

    def _renew_leases(self, now: float) -> None:
        """Every lease still in use that is past half its TTL is asked for again, which
        renews it (Ledger._renew): a request, or a grant with requests, that runs longer
        than a TTL keeps holding what it may cost. Only a dead worker's leases lapse."""
        ttl = self._ttl_ms / 1000
        for own in list(self._own.values()):
            if own.lease_end - now < ttl / 2 + TEND_SECONDS:
                own.lease_end = now + ttl
                self._spawn(self._renew(self._stub.Reserve, own.renewal))
        grant_ttl = min(self._ttl_ms, GRANT_TTL_MS)
        for grant in list(self._held_grants):
            if grant.lease_until - now < grant_ttl / 2000 + TEND_SECONDS and grant.size > 0:
                grant.lease_until = now + grant_ttl / 1000
                ask = usage_pb2.GrantRequest(
                    key_id=grant.key_id,
                    grant_id=grant.id,
                    want_micros=grant.size,
                    min_micros=grant.size,
                    ttl_ms=grant_ttl,
                )
                self._spawn(self._renew(self._stub.Grant, ask))

    async def _renew(self, rpc: Any, request: Any) -> None:
        """Best effort: a renewal that fails is asked again when half the new term has passed."""
        try:
            await rpc(request, metadata=self._metadata, timeout=5)
        except grpc.aio.AioRpcError as exc:
            log.warning("renewing a lease failed (%s); asked again in half a TTL", exc.code().name)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # settlement -------------------------------------------------------------

    async def _spool_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < SETTLE_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if self._spool is not None:
                self._spool.append(batch)
            self._send_all(batch)

    async def _sync_spool_forever(self) -> None:
        assert self._spool is not None
        while True:
            await asyncio.sleep(SPOOL_SYNC_SECONDS)
            await asyncio.to_thread(self._spool.sync)

    async def _adopt_orphans_forever(self) -> None:
        assert self._spool is not None
        while True:
            await asyncio.sleep(ORPHAN_SCAN_SECONDS)
            self._send_all(await asyncio.to_thread(self._spool.claim_orphans))

    def _send_all(self, items: list[Item]) -> None:
        for item in items:
            self._outbox.put_nowait(item)

    async def _deliver_forever(self) -> None:
        """One batch in flight at a time: while it is, the next one grows."""
        while True:
            batch = [await self._outbox.get()]
            self._sending = 1  # counted while it lingers, or a stop would not wait for it
            try:
                if not self._hurry.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._hurry.wait(), SETTLE_LINGER_SECONDS)
                self._hurry.clear()
                while len(batch) < SETTLE_BATCH and not self._outbox.empty():
                    batch.append(self._outbox.get_nowait())
                self._sending = len(batch)
                await self._deliver(batch)
            finally:
                self._sending = 0

    async def _deliver(self, batch: list[Item]) -> None:
        settlements = [item for item in batch if isinstance(item, Settlement)]
        request = usage_pb2.SettleBatchRequest(
            settlements=[s.to_pb() for s in settlements],
            releases=[
                usage_pb2.ReleaseRequest(request_id=i.request_id) for i in batch if isinstance(i, Release)
            ],
        )
        delay = 0.05
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:  # until the control plane takes it: settlements and releases are idempotent
            attempt += 1
            try:
                if loop.time() < self._unbatched_until:
                    response = await self._one_by_one(request)
                else:
                    response = await self._stub.SettleBatch(request, metadata=self._metadata, timeout=10)
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED and loop.time() >= self._unbatched_until:
                    log.warning(
                        "the control plane has no SettleBatch (an older version): settling one by one"
                    )
                    self._unbatched_until = loop.time() + UNBATCHED_SECONDS
                    continue
                if attempt in (1, 10) or attempt % 100 == 0:
                    log.warning(
                        "%d settlement(s) not delivered yet (%s); retrying", len(batch), exc.code().name
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        await self._take_outcomes(batch, settlements, response)

    async def _take_outcomes(
        self,
        batch: list[Item],
        settlements: list[Settlement],
        response: usage_pb2.SettleBatchResponse,
    ) -> None:
        """Taken settlements give their grant the unspent estimate back. A refused
        one is sent again later if the refusal may pass; otherwise it becomes a
        dead letter (usage that happened, billed when an operator replays it), and
        its own reservation is released now rather than at the end of its lease."""
        now = asyncio.get_running_loop().time()
        later: set[str] = set()
        letters: list[DeadLetter] = []
        for settlement, outcome in zip(settlements, response.settled, strict=True):
            request_id = settlement.request_id
            if outcome.error:
                first = self._refused_since.setdefault(request_id, now)
                if (
                    refusal_from_pb(outcome.refusal) in RETRYABLE_REFUSALS
                    and now - first < REFUSED_RETRY_FOR_SECONDS
                ):
                    later.add(request_id)
                    self._spawn(self._send_later(settlement))
                    continue  # still pending in the spool, and its hold stays
                letters.append(_dead_letter(settlement, outcome))
                if not settlement.grant_id:
                    self._queue.put_nowait(Release(request_id))
            self._refused_since.pop(request_id, None)
            charge = self._charges.pop(request_id, None)
            if charge is not None and not charge.done():
                charge.set_result(
                    None
                    if outcome.error
                    else Charged(
                        outcome.event.cost_micros,
                        outcome.key_remaining_micros if outcome.HasField("key_remaining_micros") else None,
                    )
                )
            hold = self._holds.pop(request_id, None)
            if hold is not None:
                grant, estimate, tokens = hold
                if grant.slice is not None and tokens:  # (one that counted none is not counted now)
                    grant.slice.correct(tokens, token_count(outcome.event.units))
                self._give_back(grant, estimate - outcome.event.cost_micros)
        if letters:
            self.dead_lettered += len(letters)
            for letter in letters:
                log.error(
                    "settlement %s refused by the control plane (%s: %s); kept as a dead letter "
                    "(%d on this worker): fix the cause, then `spendgate settlements replay`",
                    letter.settlement.request_id,
                    letter.refusal.value,
                    letter.error,
                    self.dead_lettered,
                )
            if self._dead_letters is not None:
                await asyncio.to_thread(self._dead_letters.add, letters)  # durable before the spool forgets
        if self._spool is not None:
            self._spool.done(item_id(item) for item in batch if item_id(item) not in later)
        for item in batch:
            if item.request_id not in later:
                self._taken(item.request_id)

    async def _send_later(self, settlement: Settlement) -> None:
        await asyncio.sleep(REFUSED_RETRY_SECONDS)
        self._outbox.put_nowait(settlement)

    async def _one_by_one(self, request: usage_pb2.SettleBatchRequest) -> usage_pb2.SettleBatchResponse:
        """SettleBatch for a control plane that predates it (during an upgrade), one call at a time."""
        response = usage_pb2.SettleBatchResponse()
        for settlement in request.settlements:
            outcome = response.settled.add(request_id=settlement.request_id)
            try:
                settled = await self._stub.Settle(settlement, metadata=self._metadata, timeout=10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                    raise  # retried with the whole batch: Settle is idempotent
                outcome.error = exc.details() or exc.code().name
                outcome.refusal = _refusal_of(exc.code(), outcome.error)
            else:
                outcome.event.CopyFrom(settled.event)
                outcome.duplicate = settled.duplicate
        for release in request.releases:
            released = await self._stub.Release(release, metadata=self._metadata, timeout=10)
            response.released.add(released=released.released)
        return response


def _refusal_of(code: grpc.StatusCode, details: str) -> usage_pb2.SettleRefusal:
    """The typed refusal of an older control plane's Settle error (its message names the field)."""
    if code == grpc.StatusCode.NOT_FOUND:
        return usage_pb2.SETTLE_REFUSAL_UNKNOWN_KEY
    field = details.partition(":")[0]
    return {
        "model": usage_pb2.SETTLE_REFUSAL_UNKNOWN_MODEL,
        "units": usage_pb2.SETTLE_REFUSAL_UNPRICED_UNIT,
    }.get(field, usage_pb2.SETTLE_REFUSAL_INVALID)


def _dead_letter(settlement: Settlement, outcome: usage_pb2.SettleOutcome) -> DeadLetter:
    """Replayed without its grant: by then the grant's block has been accounted for on its own."""
    unbound = replace(settlement, grant_id="")
    return DeadLetter(unbound, refusal_from_pb(outcome.refusal), outcome.error, time.time_ns() // 1_000_000)

"""A request's hold on its key's budget, ended exactly once.

Every metered request runs inside `async with Lease(budget, request_id)`:

    pending ──reserve()──► held ──settle()──► ended
       │          │          └──(exit)──► released
       │          └─ refused ──────────► ended (nothing held)
       └─(exit, reserve interrupted)──► released by id

Leaving the block — normally, by an exception, or by a cancellation, which is
not an `Exception` — releases a reservation that was not settled. A Reserve
is never cut short: a caller cancelled while it is on its way leaves at once,
and the reservation is released when the control plane has answered (had it
been released at once, the Reserve could land after the Release). A Reserve
that failed (timed out) is released by request id: Release is idempotent, and
releasing nothing is harmless. So a cancelled request gives its budget back at once
instead of holding it for the lease TTL, and a grant's in-flight count comes
down. `settle` and `release` are synchronous (the budget queues them), so no
cancellation can fall between deciding and recording."""

from __future__ import annotations

import asyncio
import enum
from types import TracebackType

from dataplane.budget import Decision, Reserver
from dataplane.settlement import Charged, Settlement


class _State(enum.Enum):
    PENDING = "pending"
    RESERVING = "reserving"
    HELD = "held"
    ENDED = "ended"


class Lease:
    def __init__(self, budget: Reserver, request_id: str) -> None:
        self._budget = budget
        self.request_id = request_id
        self._state = _State.PENDING
        self.decision: Decision | None = None

    async def reserve(self, key_id: str, amount_micros: int, tokens: int = 0) -> Decision:
        """`tokens`: the request's count against its key's tokens per minute (ratelimit.py)."""
        assert self._state is _State.PENDING, "a lease reserves once"
        admitted = self._budget.admit_now(key_id, amount_micros, tokens)
        if admitted is not None:  # synchronous: no cancellation can fall in between
            self.decision = admitted
            self._state = _State.HELD
            return admitted
        self._state = _State.RESERVING
        # Shielded: a cancelled caller must not cut the Reserve short, or the control
        # plane might take it after the release had gone (and hold it for the lease TTL).
        reserving = asyncio.ensure_future(
            self._budget.reserve(key_id, self.request_id, amount_micros, tokens)
        )
        try:
            decision = await asyncio.shield(reserving)
        except asyncio.CancelledError:
            self._state = _State.ENDED
            reserving.add_done_callback(self._release_once_answered)
            raise
        self.decision = decision
        self._state = _State.HELD if decision.granted else _State.ENDED
        return decision

    def _release_once_answered(self, reserving: asyncio.Future[Decision]) -> None:
        if reserving.cancelled() or reserving.exception() is not None:
            self._budget.release(self.request_id, None)  # unknown outcome: release by id
        elif reserving.result().granted:
            self._budget.release(self.request_id, reserving.result())

    @property
    def held(self) -> bool:
        return self._state is _State.HELD

    @property
    def grant_id(self) -> str:
        """The grant the request was admitted against ("" for a reservation of its own)."""
        grant = self.decision.grant if self.decision is not None else None
        return grant.id if grant is not None else ""

    def settle(self, settlement: Settlement) -> None:
        """Record what the request consumed; the rest of the hold goes back."""
        assert self._state is _State.HELD and self.decision is not None, f"settle on a {self._state} lease"
        self._state = _State.ENDED
        self._budget.settle(settlement, self.decision)

    async def charged(self, timeout: float) -> Charged | None:
        """What the settled request was charged, once the control plane has taken it (budget.charged)."""
        assert self._state is _State.ENDED, "charged after settle"
        return await self._budget.charged(self.request_id, timeout)

    def release(self) -> None:
        """Give the whole hold back: nothing reached the provider, or nothing was consumed."""
        if self._state is _State.HELD:
            self._budget.release(self.request_id, self.decision)
        elif self._state is _State.RESERVING:  # the control plane may hold it: release by id
            self._budget.release(self.request_id, None)
        self._state = _State.ENDED

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

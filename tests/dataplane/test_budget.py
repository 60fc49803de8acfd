"""The worker's budget (dataplane/budget.py) against a real control plane over
gRPC, on SQLite and PostgreSQL: when a key earns a grant, what is admitted
against it, and how every grant goes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import grpc
import pytest
from sqlalchemy import select

from clients.client import ControlPlaneClient
from controlplane.server import ControlPlane
from controlplane.services.usage import UsageService
from controlplane.store.schema import reservations
from dataplane import budget as budget_module
from dataplane.budget import Decision, GrpcBudget
from dataplane.settlement import Settlement
from spendgate.v1 import usage_pb2_grpc
from tests.controlplane.test_concurrency import check_ledger

ESTIMATE = 1_000
COST = 450  # 1000 input + 500 output tokens of gpt-4o-mini


@asynccontextmanager
async def running_budget(plane: ControlPlane, ttl_ms: int = 600_000) -> AsyncIterator[GrpcBudget]:
    async with grpc.aio.insecure_channel(plane.address) as channel:
        metadata = (("authorization", f"Bearer {plane.tokens.service}"),)
        budget = GrpcBudget(usage_pb2_grpc.UsageServiceStub(channel), metadata, ttl_ms=ttl_ms)
        budget.start()
        try:
            yield budget
        finally:
            await budget.stop()


def settle(budget: GrpcBudget, key_id: str, request_id: str, decision: Decision) -> None:
    units = {"input_tokens": 1000, "output_tokens": 500}
    budget.settle(Settlement(request_id, key_id, "openai", "gpt-4o-mini", units), decision)


def settle_the_lot(budget: GrpcBudget, key_id: str, warm: list[Decision], later: list[Decision]) -> None:
    """Settle the warm-up requests (the last of which is later[0]), then l0, l1 and big."""
    for n, decision in enumerate(warm[:-1]):
        settle(budget, key_id, f"warm-{n}", decision)
    names = (f"warm-{len(warm) - 1}", "l0", "l1", "big")
    for request_id, decision in zip(names, later, strict=True):
        settle(budget, key_id, request_id, decision)


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def rows(plane: ControlPlane, key_id: str) -> dict[str, tuple[int, str]]:
    with plane.engine.connect() as conn:
        found = conn.execute(select(reservations).where(reservations.c.key_id == key_id))
        return {r.request_id: (r.amount_micros, r.state) for r in found}


async def until_granted(
    budget: GrpcBudget, key_id: str, admitted: list[Decision], prefix: str = "warm"
) -> Decision:
    """Reserve until a request is admitted against a grant; every decision is kept."""
    for n in range(200):
        decision = await budget.reserve(key_id, f"{prefix}-{n}", ESTIMATE)
        assert decision.granted
        admitted.append(decision)
        if decision.grant is not None:
            return decision
        await asyncio.sleep(0.01)
    raise AssertionError("no grant")


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def test_a_busy_key_is_admitted_against_its_grant_and_settles_against_it(
    plane: ControlPlane, master: ControlPlaneClient
) -> None:
    key, _ = master.create_key("busy", cap_micros=10_000_000)

    async def scenario() -> None:
        async with running_budget(plane) as budget:
            admitted: list[Decision] = []
            first = await until_granted(budget, key.id, admitted)
            own = [d for d in admitted if d.grant is None]
            assert len(own) >= budget_module.GRANT_HOT  # quiet keys reserve per request
            grant = first.grant
            assert grant is not None and grant.size == ESTIMATE * budget_module.GRANT_REQUESTS
            for n in range(20):
                decision = await budget.reserve(key.id, f"local-{n}", ESTIMATE)
                assert decision.grant is grant
                admitted.append(decision)
            # Only the first few requests and the grant itself reached the ledger.
            assert set(rows(plane, key.id)) == {f"warm-{n}" for n in range(len(own))} | {grant.id}
            for n, decision in enumerate(admitted):
                settle(
                    budget, key.id, f"warm-{n}" if n < len(own) + 1 else f"local-{n - len(own) - 1}", decision
                )
            await eventually(lambda: budget.pending == 0 and grant.outstanding == 0)
            # Each request's unspent estimate came back to the grant with the control plane's answer.
            assert grant.balance == grant.size - 21 * COST
            assert rows(plane, key.id)[grant.id] == (grant.size - 21 * COST, "active")
            assert master.get_key(key.id).spent_micros == len(admitted) * COST
            check_ledger(plane)
        # A stopping worker hands its grant back.
        assert rows(plane, key.id)[grant.id][1] == "released"
        assert master.get_key(key.id).reserved_micros == 0
        check_ledger(plane)

    run(scenario)


def test_a_grant_that_runs_short_gives_back_its_unused_part_before_the_request_reserves(
    plane: ControlPlane, master: ControlPlaneClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget_module, "GRANT_REQUESTS", 5)
    monkeypatch.setattr(budget_module, "GRANT_MIN_REQUESTS", 1)
    key, _ = master.create_key("short", cap_micros=10_000_000)

    async def scenario() -> None:
        async with running_budget(plane) as budget:
            admitted: list[Decision] = []
            first = await until_granted(budget, key.id, admitted)
            grant = first.grant
            assert grant is not None and grant.size == 5 * ESTIMATE
            # From here on the control plane refuses a successor (it could not be worth having).
            monkeypatch.setattr(budget_module, "GRANT_MIN_REQUESTS", 10**6)
            local = [first] + [await budget.reserve(key.id, f"l{n}", ESTIMATE) for n in range(2)]
            assert all(d.grant is grant for d in local) and grant.balance == 2 * ESTIMATE
            big = await budget.reserve(key.id, "big", 3 * ESTIMATE)  # does not fit what is left
            assert big.granted and big.grant is None and grant.retired
            # The unused 2 estimates went back at once; the 3 in flight stay held.
            assert rows(plane, key.id)[grant.id] == (3 * ESTIMATE, "active")
            settle_the_lot(budget, key.id, admitted, [*local, big])
            # Once its last request has settled, the rest of the grant goes back.
            await eventually(lambda: rows(plane, key.id)[grant.id][1] == "released")
            check_ledger(plane)
        after = master.get_key(key.id)
        assert (after.spent_micros, after.reserved_micros) == ((len(admitted) + 3) * COST, 0)
        check_ledger(plane)

    run(scenario)


def test_a_request_that_does_not_fit_waits_for_the_successor_on_its_way(
    plane: ControlPlane, master: ControlPlaneClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget_module, "GRANT_REQUESTS", 5)
    monkeypatch.setattr(budget_module, "GRANT_MIN_REQUESTS", 1)
    key, _ = master.create_key("successor", cap_micros=10_000_000)

    async def scenario() -> None:
        async with running_budget(plane) as budget:
            admitted: list[Decision] = []
            first = await until_granted(budget, key.id, admitted)
            old = first.grant
            assert old is not None
            local = [first] + [await budget.reserve(key.id, f"l{n}", ESTIMATE) for n in range(2)]
            assert old.balance == 2 * ESTIMATE  # running low: its successor has been asked for
            big = await budget.reserve(key.id, "big", 3 * ESTIMATE)
            new = big.grant
            assert new is not None and new is not old and old.retired
            assert new.size == (5 + 2 * 3) * ESTIMATE  # sized for the 3 requests in flight too
            assert "big" not in rows(plane, key.id)  # no reservation of its own
            # The old grant's unused part went back; what its 3 requests hold stays held.
            await eventually(lambda: rows(plane, key.id)[old.id] == (3 * ESTIMATE, "active"))
            settle_the_lot(budget, key.id, admitted, [*local, big])
            await eventually(lambda: rows(plane, key.id)[old.id][1] == "released")
        assert rows(plane, key.id)[new.id][1] == "released"
        after = master.get_key(key.id)
        assert (after.spent_micros, after.reserved_micros) == ((len(admitted) + 3) * COST, 0)
        check_ledger(plane)

    run(scenario)


def test_a_grant_due_for_renewal_is_replaced_without_a_gap(
    plane: ControlPlane, master: ControlPlaneClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget_module, "GRANT_RENEW_SECONDS", 1.0)
    monkeypatch.setattr(budget_module, "GRANT_PREFETCH_SECONDS", 0.5)
    key, _ = master.create_key("renewing", cap_micros=10_000_000)

    async def scenario() -> None:
        async with running_budget(plane) as budget:
            admitted: list[Decision] = []
            first = await until_granted(budget, key.id, admitted)
            own = len(admitted) - 1
            seen = {first.grant.id}  # type: ignore[union-attr]
            for n in range(50):  # 2.5 s of steady traffic, settled as it goes
                decision = await budget.reserve(key.id, f"steady-{n}", ESTIMATE)
                assert decision.grant is not None  # never without a grant: the successor came first
                seen.add(decision.grant.id)
                settle(budget, key.id, f"steady-{n}", decision)
                await asyncio.sleep(0.05)
            assert len(seen) >= 3  # renewed every second or so
            assert sum(not r.startswith("grant-") for r in rows(plane, key.id)) == own
            old = first.grant
            assert old is not None
            for n, decision in enumerate(admitted[:-1]):
                settle(budget, key.id, f"warm-{n}", decision)
            settle(budget, key.id, f"warm-{own}", first)
            await eventually(lambda: rows(plane, key.id)[old.id][1] == "released")
        check_ledger(plane)

    run(scenario)


def test_requests_that_outlive_their_ttl_keep_holding_what_they_may_cost(
    make_plane: Callable[..., ControlPlane], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long streams: a request of its own and a retired grant with a request still running
    renew their leases while in use, so the sweeper never hands back what they hold; a
    lease nobody renews (a dead worker's) still lapses."""
    monkeypatch.setattr(budget_module, "GRANT_RENEW_SECONDS", 0.5)  # retired while its request runs
    monkeypatch.setattr(budget_module, "GRANT_IDLE_SECONDS", 60.0)
    plane = make_plane(db_url, sweep_seconds=0.1)
    master = ControlPlaneClient(plane.address, plane.tokens.admin)
    account = master.create_account("long", 100_000_000)
    owner = ControlPlaneClient(plane.address, account.master_key_secret)
    key, _ = owner.create_key("streams", cap_micros=10_000_000)

    async def scenario() -> None:
        async with running_budget(plane, ttl_ms=1_500) as budget:
            admitted: list[Decision] = []
            on_grant = await until_granted(budget, key.id, admitted)
            grant = on_grant.grant
            assert grant is not None
            own = [n for n, d in enumerate(admitted) if d.grant is None]
            assert own  # the first requests reserved on their own
            await asyncio.sleep(4)  # over two TTLs, the sweeper running every 0.1 s
            held = rows(plane, key.id)
            assert held[grant.id][1] == "active" and grant.retired  # replaced, yet still held
            assert all(held[f"warm-{n}"][1] == "active" for n in own)
            assert owner.get_key(key.id).reserved_micros >= len(own) * ESTIMATE
            for n, decision in enumerate(admitted):
                settle(budget, key.id, f"warm-{n}", decision)
            await eventually(lambda: rows(plane, key.id)[grant.id][1] == "released")
            assert all(rows(plane, key.id)[f"warm-{n}"][1] == "settled" for n in own)
        after = owner.get_key(key.id)
        assert (after.spent_micros, after.reserved_micros) == (len(admitted) * COST, 0)
        owner.close()
        master.close()
        check_ledger(plane)

    run(scenario)


def test_a_key_change_or_an_idle_key_ends_the_grant(
    plane: ControlPlane, master: ControlPlaneClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget_module, "GRANT_IDLE_SECONDS", 0.3)
    key, _ = master.create_key("changing", cap_micros=10_000_000)

    async def scenario() -> None:
        async with running_budget(plane) as budget:
            admitted: list[Decision] = []
            first = await until_granted(budget, key.id, admitted)
            assert first.grant is not None
            budget.release("unused", first)  # never forwarded: the estimate goes back to the grant
            assert first.grant.balance == first.grant.size and first.grant.outstanding == 0
            budget.key_changed(key.id)  # as WatchKeys reports a cap change
            await eventually(lambda: rows(plane, key.id)[first.grant.id][1] == "released")  # type: ignore[union-attr]
            after_change = await budget.reserve(key.id, "after-change", ESTIMATE)
            assert after_change.grant is None  # reserved on its own, on the new terms
            budget.release("after-change", after_change)
            again: list[Decision] = []
            second = await until_granted(budget, key.id, again, prefix="again")
            assert second.grant is not None and second.grant is not first.grant
            for prefix, decisions in (("warm", admitted[:-1]), ("again", again)):  # first went back above
                for n, decision in enumerate(decisions):
                    budget.release(f"{prefix}-{n}", decision)
            # Idle for GRANT_IDLE_SECONDS: it goes back by itself.
            await eventually(lambda: rows(plane, key.id)[second.grant.id][1] == "released")  # type: ignore[union-attr]
            await eventually(lambda: budget.pending == 0 and master.get_key(key.id).reserved_micros == 0)
            check_ledger(plane)

    run(scenario)


def test_an_older_control_plane_without_grants_or_settle_batch_still_gets_every_settlement(
    make_plane: Callable[..., ControlPlane], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During an upgrade, a data plane may face a control plane that predates Grant and SettleBatch."""
    for method in ("Grant", "SettleBatch"):  # what an older control plane answers: UNIMPLEMENTED
        monkeypatch.setattr(UsageService, method, getattr(usage_pb2_grpc.UsageServiceServicer, method))
    plane = make_plane(db_url)
    with ControlPlaneClient(plane.address, plane.tokens.admin) as admin:
        created = admin.create_account("old", 100_000_000)
    with ControlPlaneClient(plane.address, created.master_key_secret) as master:
        key, _ = master.create_key("u", cap_micros=10_000_000)

        async def scenario() -> None:
            async with running_budget(plane) as budget:
                decisions = [await budget.reserve(key.id, f"r{n}", ESTIMATE) for n in range(6)]
                assert all(d.granted and d.grant is None for d in decisions)  # every one reserved alone
                for n, decision in enumerate(decisions[:-1]):
                    settle(budget, key.id, f"r{n}", decision)
                budget.release("r5", decisions[-1])
                await eventually(lambda: budget.pending == 0)

        run(scenario)
        after = master.get_key(key.id)
        assert (after.spent_micros, after.reserved_micros) == (5 * COST, 0)
    check_ledger(plane)


def test_a_stop_waits_for_the_release_lingering_for_company(
    plane: ControlPlane, master: ControlPlaneClient
) -> None:
    """A batch's first item waits SETTLE_LINGER_SECONDS outside both queues; a stop
    that began meanwhile must still deliver it (the fuzz in test_lease.py found this)."""
    key, _ = master.create_key("stopping", cap_micros=5_000_000)

    async def scenario() -> None:
        async with running_budget(plane) as budget:
            held = await budget.reserve(key.id, "released", ESTIMATE)
            budget.release("released", held)
            await asyncio.sleep(budget_module.SETTLE_LINGER_SECONDS / 4)  # taken, lingering
        assert rows(plane, key.id) == {"released": (ESTIMATE, "released")}
        assert master.get_key(key.id).reserved_micros == 0

    run(scenario)

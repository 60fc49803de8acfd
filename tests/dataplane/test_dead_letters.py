"""Settlements the control plane refuses are not lost: a permanent refusal
becomes a dead letter (durable, counted, listed by `spendgate settlements
list`), its reservation goes back at once, and `spendgate settlements replay`
bills it once the operator has fixed the cause. A refusal that may pass is
retried first. Real control plane over gRPC, both backends, real spool files."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from clients import cli
from clients.client import ControlPlaneClient
from controlplane.server import ControlPlane
from dataplane import budget as budget_module
from dataplane.budget import Decision, GrpcBudget
from dataplane.settlement import Refusal, Settlement
from dataplane.spool import DeadLetters, Spool, read_pending
from spendgate.v1 import usage_pb2, usage_pb2_grpc
from tests.conftest import FakeClock
from tests.controlplane.test_concurrency import check_ledger
from tests.dataplane.test_budget import eventually, run

RATE = 10_000_000  # the fix: $10 per million characters


@asynccontextmanager
async def spooled_budget(plane: ControlPlane, spool_dir: Path) -> AsyncIterator[GrpcBudget]:
    async with grpc.aio.insecure_channel(plane.address) as channel:
        metadata = (("authorization", f"Bearer {plane.tokens.service}"),)
        budget = GrpcBudget(usage_pb2_grpc.UsageServiceStub(channel), metadata, 600_000, Spool(spool_dir))
        budget.start()
        try:
            yield budget
        finally:
            await budget.stop()


def with_characters(key_id: str, request_id: str, started_ms: int) -> Settlement:
    """What a provider reported that the model's catalog row does not price (characters)."""
    units = {"input_tokens": 1000, "output_tokens": 500, "characters": 2000}
    return Settlement(request_id, key_id, "openai", "gpt-4o-mini", units, started_ms=started_ms)


def spendgate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = cli.main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_refused_settlement_is_a_dead_letter_until_replayed_after_the_fix(
    plane: ControlPlane,
    master: ControlPlaneClient,
    admin: ControlPlaneClient,
    clock: FakeClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, _ = master.create_key("unpriced", cap_micros=5_000_000)
    spool_dir = tmp_path / "spool"
    started = clock()

    async def scenario() -> None:
        async with spooled_budget(plane, spool_dir) as budget:
            decision = await budget.reserve(key.id, "r1", 50_000)
            assert decision.granted and master.get_key(key.id).reserved_micros == 50_000
            budget.settle(with_characters(key.id, "r1", started), decision)
            await eventually(lambda: budget.dead_lettered == 1)
            # Its reservation goes back now, not at the end of its 10-minute lease.
            await eventually(lambda: master.get_key(key.id).reserved_micros == 0)
            await eventually(lambda: budget.pending == 0)
            assert read_pending(budget._spool.path) == []  # type: ignore[union-attr]
        assert master.get_key(key.id).spent_micros == 0  # not billed: yet

    run(scenario)
    monkeypatch.setenv("SPENDGATE_CONTROLPLANE", plane.address)
    monkeypatch.setenv("SPENDGATE_SERVICE_TOKEN", plane.tokens.service)
    code, listed = spendgate(capsys, "settlements", "list", "--spool-dir", str(spool_dir))
    assert code == 0
    [letter] = listed["dead_letters"]
    assert (letter["request_id"], letter["key_id"], letter["refusal"]) == ("r1", key.id, "unpriced_unit")
    assert "characters" in letter["error"]

    # Replayed before the fix: still refused, still kept.
    code, result = spendgate(capsys, "settlements", "replay", "--spool-dir", str(spool_dir))
    assert (code, result["replayed"], result["billed"]) == (1, 1, 0)
    assert len(DeadLetters(spool_dir).read()) == 1

    # The operator prices the unit from before the request started, and replays.
    row = next(p for p in admin.list_prices().prices if (p.provider, p.model) == ("openai", "gpt-4o-mini"))
    fixed = usage_pb2.Price()
    fixed.CopyFrom(row)
    fixed.characters_micros_per_mchar = RATE
    fixed.effective_from_ms = started - 1
    admin.upsert_price(fixed)
    code, result = spendgate(capsys, "settlements", "replay", "--spool-dir", str(spool_dir))
    expected = -(
        -(1000 * row.input_micros_per_mtok + 500 * row.output_micros_per_mtok + 2000 * RATE) // 10**6
    )
    assert (code, result["replayed"], result["billed"], result["billed_cost_micros"]) == (0, 1, 1, expected)
    assert DeadLetters(spool_dir).read() == []
    after = master.get_key(key.id)
    assert (after.spent_micros, after.reserved_micros) == (expected, 0)
    # A second replay finds nothing to do.
    code, result = spendgate(capsys, "settlements", "replay", "--spool-dir", str(spool_dir))
    assert (code, result["replayed"]) == (0, 0)
    check_ledger(plane)


def test_a_refusal_that_may_pass_is_retried_before_it_becomes_a_dead_letter(
    plane: ControlPlane, master: ControlPlaneClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget_module, "REFUSED_RETRY_SECONDS", 0.1)
    monkeypatch.setattr(budget_module, "REFUSED_RETRY_FOR_SECONDS", 0.5)
    sent: list[str] = []

    async def scenario() -> None:
        async with spooled_budget(plane, tmp_path / "spool") as budget:
            original = budget._stub.SettleBatch

            async def counting(
                request: usage_pb2.SettleBatchRequest, **kw: Any
            ) -> usage_pb2.SettleBatchResponse:
                sent.extend(s.request_id for s in request.settlements)
                return await original(request, **kw)

            budget._stub.SettleBatch = counting  # type: ignore[assignment]  # a coroutine as the callable
            unknown = Settlement("r-unknown", "key_not_here_yet", "openai", "gpt-4o-mini")
            budget.settle(unknown, Decision(True, "", None, 0, 0, 0))
            await asyncio.sleep(0.3)
            assert budget.dead_lettered == 0  # still being retried, still pending in the spool
            assert [i.request_id for i in read_pending(budget._spool.path)] == ["r-unknown"]  # type: ignore[union-attr]
            await eventually(lambda: budget.dead_lettered == 1)

    run(scenario)
    assert sent.count("r-unknown") >= 3
    [letter] = DeadLetters(tmp_path / "spool").read()
    assert letter.refusal is Refusal.UNKNOWN_KEY

"""Grants (budget blocks a data-plane worker admits against) and batched
settlement, over real gRPC on both backends."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from clients.client import ControlPlaneClient
from controlplane.server import ControlPlane
from controlplane.store.schema import reservations
from spendgate.v1 import usage_pb2
from tests.controlplane.test_concurrency import check_ledger
from tests.controlplane.test_usage_rpc import settle_request

# settle_request's default units cost 450 micros on gpt-4o-mini, fee 32.


def held(plane: ControlPlane, grant_id: str) -> tuple[int, int, str]:
    with plane.engine.connect() as conn:
        row = conn.execute(select(reservations).where(reservations.c.request_id == grant_id)).one()
    return row.amount_micros, row.wallet_micros, row.state


def test_a_grant_fits_whole_and_is_at_most_a_quarter_of_what_is_left(
    plane: ControlPlane, master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    key, _ = master.create_key("u", cap_micros=1_000_000)
    first = service.grant(key.id, "g1", want_micros=10_000_000, min_micros=1)
    assert first.granted and first.amount_micros == 250_000 and first.expires_ms > 0
    assert service.grant(key.id, "g1", want_micros=10_000_000, min_micros=1).amount_micros == 250_000
    assert master.get_key(key.id).reserved_micros == 250_000  # the replay held nothing more
    second = service.grant(key.id, "g2", want_micros=10_000_000, min_micros=1)
    assert second.amount_micros == 750_000 // 4
    small = service.grant(key.id, "g3", want_micros=1_000, min_micros=1)
    assert small.amount_micros == 1_000  # no more than asked for
    refused = service.grant(key.id, "g4", want_micros=1_000_000, min_micros=200_000)
    assert not refused.granted and refused.amount_micros == 0
    assert master.get_key(key.id).reserved_micros == 250_000 + 187_500 + 1_000
    check_ledger(plane)


def test_a_grant_is_bounded_by_the_wallet_and_refused_for_a_revoked_key(
    plane: ControlPlane, new_account: Callable[..., ControlPlaneClient], service: ControlPlaneClient
) -> None:
    poor = new_account("poor", credit_micros=1_000_000)
    uncapped, _ = poor.create_key("u")
    grant = service.grant(uncapped.id, "g", want_micros=10**12, min_micros=1)
    # A quarter of the wallet holds the block and its 7% fee: 233_644 + 16_356 = 250_000.
    assert grant.amount_micros == 233_644
    assert held(plane, "g")[:2] == (233_644, 250_000)
    poor.revoke_key(uncapped.id)
    assert not service.grant(uncapped.id, "g-after", want_micros=10, min_micros=1).granted
    check_ledger(plane)


def test_settling_against_a_grant_moves_the_cost_from_the_block_to_spent(
    plane: ControlPlane, master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    key, _ = master.create_key("u", cap_micros=1_000_000)
    assert service.grant(key.id, "g", want_micros=100_000, min_micros=1).amount_micros == 100_000
    for i in range(3):
        service.settle(settle_request(key.id, f"r{i}", grant_id="g"))
    replay = service.settle(settle_request(key.id, "r0", grant_id="g"))
    assert replay.duplicate
    after = master.get_key(key.id)
    assert (after.spent_micros, after.reserved_micros) == (1_350, 100_000 - 1_350)
    assert held(plane, "g") == (98_650, 107_000 - 3 * 482, "active")
    check_ledger(plane)

    assert service.release("g", amount_micros=50_000)  # the worker's unused part
    assert held(plane, "g") == (48_650, 105_554 - 53_500, "active")
    assert master.get_key(key.id).reserved_micros == 48_650
    service.settle(settle_request(key.id, "r3", grant_id="g"))  # in flight when the part went back
    assert service.release("g")  # the rest, once nothing is in flight
    assert held(plane, "g")[2] == "released" and not service.release("g")
    late = service.settle(settle_request(key.id, "r4", grant_id="g")).event
    after = master.get_key(key.id)
    assert late.cost_micros == 450 and (after.spent_micros, after.reserved_micros) == (2_250, 0)
    check_ledger(plane)


def test_a_reserve_can_hand_back_a_grants_unused_part_before_it_decides(
    plane: ControlPlane, master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    key, _ = master.create_key("u", cap_micros=10_000)
    assert service.grant(key.id, "g", want_micros=2_500, min_micros=1).amount_micros == 2_500
    assert service.reserve(key.id, "all-the-rest", 7_500).granted
    assert not service.reserve(key.id, "refused", 100).granted  # everything is held
    # The worker gives up 1_000 of its grant in the same call: now there is room.
    granted = service.reserve(key.id, "r", 100, return_grant_id="g", return_micros=1_000)
    assert granted.granted and granted.reserved_micros == 2_500 - 1_000 + 7_500 + 100
    assert held(plane, "g")[::2] == (1_500, "active")
    again = service.reserve(key.id, "r", 100, return_grant_id="g", return_micros=1_000)
    assert again.granted and held(plane, "g")[0] == 1_500  # a replay hands back nothing more
    assert master.get_key(key.id).reserved_micros == 9_100
    check_ledger(plane)


def test_settle_batch_commits_the_good_items_and_reports_the_bad(
    plane: ControlPlane, master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    key, _ = master.create_key("u", cap_micros=1_000_000)
    other, _ = master.create_key("v")
    assert service.reserve(key.id, "own", 5_000).granted
    assert service.reserve(key.id, "to-release", 5_000).granted
    assert service.reserve(key.id, "no-price", 5_000).granted  # refused below: its lease stays active
    response = service.settle_batch(
        [
            settle_request(key.id, "own"),
            settle_request(key.id, "bad-model", model=("openai", "no-such-model")),
            settle_request("no-such-key", "orphan"),
            settle_request(key.id, ""),
            settle_request(key.id, "own", inp=99_999),  # a replay inside the batch
            settle_request(key.id, "fresh", inp=2_000, out=0),
            settle_request(key.id, "no-price", units={"characters": 5}),
            settle_request(other.id, "own"),  # settled above for another key
        ],
        releases=["to-release", "never-reserved"],
    )
    outcomes = [
        (o.request_id, o.error.split(":")[0], o.duplicate, o.event.cost_micros, o.refusal)
        for o in response.settled
    ]
    assert outcomes == [
        ("own", "", False, 450, usage_pb2.SETTLE_REFUSAL_UNSPECIFIED),
        ("bad-model", "model", False, 0, usage_pb2.SETTLE_REFUSAL_UNKNOWN_MODEL),
        ("orphan", "key no-such-key not found", False, 0, usage_pb2.SETTLE_REFUSAL_UNKNOWN_KEY),
        ("", "request_id", False, 0, usage_pb2.SETTLE_REFUSAL_INVALID),
        ("own", "", True, 450, usage_pb2.SETTLE_REFUSAL_UNSPECIFIED),
        ("fresh", "", False, 300, usage_pb2.SETTLE_REFUSAL_UNSPECIFIED),
        ("no-price", "units", False, 0, usage_pb2.SETTLE_REFUSAL_UNPRICED_UNIT),
        ("own", "request_id", False, 0, usage_pb2.SETTLE_REFUSAL_CONFLICT),
    ]
    assert [r.released for r in response.released] == [True, False]
    after = master.get_key(key.id)
    assert (after.spent_micros, after.reserved_micros) == (750, 5_000)
    check_ledger(plane)
    assert service.release("no-price")  # still a live lease, so it can be given back
    assert master.get_key(key.id).reserved_micros == 0
    check_ledger(plane)


def test_a_settlement_says_what_its_key_may_still_spend(
    plane: ControlPlane, master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    """What the cost headers report: the cap less the spend and every live hold, after the batch."""
    key, _ = master.create_key("u", cap_micros=1_000_000)
    uncapped, _ = master.create_key("v")
    assert service.reserve(key.id, "a", 5_000).granted
    assert service.reserve(key.id, "b", 5_000).granted
    assert service.reserve(key.id, "still-running", 7_000).granted
    response = service.settle_batch(
        [
            settle_request(key.id, "a"),
            settle_request(key.id, "b", inp=2_000, out=0),
            settle_request(uncapped.id, "c"),
            settle_request(key.id, "d", model=("openai", "no-such-model")),
        ]
    )
    a, b, c, d = response.settled
    assert (a.event.cost_micros, b.event.cost_micros) == (450, 300)
    assert a.key_remaining_micros == b.key_remaining_micros == 1_000_000 - 450 - 300 - 7_000
    assert a.key_remaining_micros == master.get_key(key.id).remaining_micros
    assert not c.HasField("key_remaining_micros") and not d.HasField("key_remaining_micros")
    replay = service.settle_batch([settle_request(key.id, "a")]).settled[0]
    assert replay.duplicate and replay.key_remaining_micros == a.key_remaining_micros


def test_concurrent_batches_over_shared_keys_neither_deadlock_nor_drift(
    plane: ControlPlane, master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    """Batches name their keys in random order; the ledger locks them in id order."""
    keys = [master.create_key(f"u{i}", cap_micros=10_000_000)[0] for i in range(4)]
    grants = {k.id: f"g-{k.id}" for k in keys}
    for k in keys:
        assert service.grant(k.id, grants[k.id], want_micros=1_000_000, min_micros=1).granted

    def batch(seed: int) -> int:
        rng = random.Random(seed)
        items = []
        for _ in range(20):
            k = rng.choice(keys)
            grant = grants[k.id] if rng.random() < 0.5 else ""
            items.append(settle_request(k.id, uuid.uuid4().hex, grant_id=grant))
        return sum(o.event.cost_micros for o in service.settle_batch(items).settled)

    with ThreadPoolExecutor(max_workers=8) as pool:
        total = sum(pool.map(batch, range(40)))
    assert total == 40 * 20 * 450
    assert sum(master.get_key(k.id).spent_micros for k in keys) == total
    check_ledger(plane)

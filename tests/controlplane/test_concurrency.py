"""Caps hold under many concurrent callers, and the ledger never drifts."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from clients.client import ControlPlaneClient
from controlplane.server import ControlPlane
from controlplane.store.schema import accounts, keys, reservations, usage_events
from spendgate.v1 import usage_pb2

ESTIMATE = 400  # an upper bound of the actual cost below (360), as the data plane's estimates are
CAP = 2_000


def check_ledger(plane: ControlPlane) -> None:
    """The invariants at the top of ledger.py, read straight from the tables."""
    with plane.engine.connect() as conn:
        for key in conn.execute(select(keys)).mappings():
            active = conn.execute(
                select(func.coalesce(func.sum(reservations.c.amount_micros), 0)).where(
                    reservations.c.key_id == key["id"], reservations.c.state == "active"
                )
            ).scalar_one()
            spent = conn.execute(
                select(func.coalesce(func.sum(usage_events.c.cost_micros), 0)).where(
                    usage_events.c.key_id == key["id"]
                )
            ).scalar_one()
            assert key["reserved_micros"] == active >= 0
            assert key["spent_micros"] == spent >= 0
        for account in conn.execute(select(accounts)).mappings():
            held = conn.execute(
                select(func.coalesce(func.sum(reservations.c.wallet_micros), 0)).where(
                    reservations.c.account_id == account["id"], reservations.c.state == "active"
                )
            ).scalar_one()
            charged = conn.execute(
                select(
                    func.coalesce(func.sum(usage_events.c.cost_micros + usage_events.c.fee_micros), 0)
                ).where(usage_events.c.account_id == account["id"])
            ).scalar_one()
            assert account["reserved_micros"] == held and account["spent_micros"] == charged


def one_request(service: ControlPlaneClient, key_id: str) -> bool:
    """Reserve, then settle a real cost (gpt-4o-mini, 2000 in / 100 out = 360 micros) or refuse."""
    request_id = uuid.uuid4().hex
    if not service.reserve(key_id, request_id, ESTIMATE).granted:
        return False
    service.settle(
        usage_pb2.SettleRequest(
            request_id=request_id,
            key_id=key_id,
            provider="openai",
            model="gpt-4o-mini",
            units=usage_pb2.Units(input_tokens=2000, output_tokens=100),
        )
    )
    return True


def test_concurrent_reserves_overspend_by_at_most_one_estimate(
    plane: ControlPlane, master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    capped = [master.create_key(f"user_{i}", cap_micros=CAP)[0] for i in range(4)]
    holds: list[bool] = []
    with ThreadPoolExecutor(max_workers=32) as pool:
        # 160 reserves held open at once, across four keys: nothing settles.
        futures = [
            pool.submit(lambda k: service.reserve(k.id, uuid.uuid4().hex, ESTIMATE).granted, k)
            for k in capped
            for _ in range(40)
        ]
        holds = [f.result() for f in futures]
    # remaining > 0 admits: ceil(2000 / 400) = 5 holds per key, never more.
    assert holds.count(True) == 5 * len(capped)
    for key in capped:
        got = master.get_key(key.id)
        assert got.reserved_micros == 5 * ESTIMATE <= CAP + ESTIMATE
    check_ledger(plane)


def test_concurrent_reserve_and_settle_keep_spent_and_reserved_exact(
    plane: ControlPlane, master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    key, _ = master.create_key("busy", cap_micros=CAP)
    with ThreadPoolExecutor(max_workers=24) as pool:
        admitted = sum(pool.map(lambda _: one_request(service, key.id), range(120)))
    while one_request(service, key.id):  # use up whatever the in-flight holds left
        admitted += 1
    got = master.get_key(key.id)
    assert got.reserved_micros == 0
    assert got.spent_micros == admitted * 360
    # Each admission saw remaining > 0 with every in-flight request holding its
    # upper-bound estimate, so the overspend stays below one estimate.
    assert CAP <= got.spent_micros < CAP + ESTIMATE
    check_ledger(plane)

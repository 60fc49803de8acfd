"""Grants as a user sees them: a busy key is admitted against a block of its
budget held by the worker (no Reserve round trip per request), the block goes
back when the key goes quiet or changes, and the cap still holds."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import create_engine, func, select

from clients.client import ControlPlaneClient
from controlplane.store.schema import reservations
from fakeupstream.server import MockUpstream
from tests.e2e.conftest import Account, Running, start_up, stop_up, upstream_env

MESSAGES = [{"role": "user", "content": "Count to ten."}]
BODY = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 20}
# The data plane's upper bound: body bytes at the input rate + max_tokens at the output rate.
ESTIMATE = -(-(len(json.dumps(BODY).encode()) * 150_000 + 20 * 600_000) // 1_000_000)


def hammer(gateway: Running, key: dict[str, object], threads: int, until: Callable[[int], bool]) -> list[int]:
    """Requests from `threads` keep-alive clients, each until `until(status)`."""

    def one_client(_: int) -> list[int]:
        statuses: list[int] = []
        with httpx.Client(
            headers={"Authorization": f"Bearer {key['secret']}", "x-mock-output-tokens": "20"}
        ) as c:
            while not statuses or not until(statuses[-1]):
                statuses.append(c.post(gateway.base + "/v1/chat/completions", json=BODY).status_code)
        return statuses

    with ThreadPoolExecutor(threads) as pool:
        return [s for statuses in pool.map(one_client, range(threads)) for s in statuses]


def all_admitted(total: int) -> Callable[[int], bool]:
    """For `hammer`: stop once `total` requests have been sent, all of them admitted."""
    sent = [0]

    def until(status: int) -> bool:
        assert status == 200
        sent[0] += 1
        return sent[0] >= total

    return until


def reservation_rows(gateway: Running, key_id: str) -> tuple[int, int]:
    """(grants, per-request reservations) the control plane recorded for the key."""
    engine = create_engine(f"sqlite:///{gateway.data_dir / 'spendgate.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(reservations.c.request_id.like("grant-%"), func.count())
                .where(reservations.c.key_id == key_id)
                .group_by(reservations.c.request_id.like("grant-%"))
            ).all()
    finally:
        engine.dispose()
    counts = {bool(is_grant): n for is_grant, n in rows}
    return counts.get(True, 0), counts.get(False, 0)


def wait_until_nothing_is_held(account: Account, key_id: str, timeout: float = 5.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while (usage := account.key_usage(key_id))["reserved_micros"] and time.monotonic() < deadline:
        time.sleep(0.1)
    return usage


def test_a_busy_key_is_admitted_against_a_grant_that_goes_back_when_idle(
    gateway: Running, account: Account
) -> None:
    key = account.mint("busy", max_spend_usd=5)
    statuses = hammer(gateway, key, 4, all_admitted(240))
    events = account.events(str(key["id"]), len(statuses))
    grants, own = reservation_rows(gateway, str(key["id"]))
    print(f"{len(statuses)} requests: {grants} grant(s), {own} per-request reservation(s)")
    assert grants >= 1 and own < len(statuses) // 4
    usage = wait_until_nothing_is_held(account, str(key["id"]))
    assert usage["reserved_micros"] == 0  # idle grants went back
    assert usage["spent_micros"] == sum(int(e["cost_micros"]) for e in events)  # type: ignore[call-overload]


def test_grants_never_let_a_key_overrun_its_cap(gateway: Running, account: Account) -> None:
    cap = 3_000
    key = account.mint("capped-busy", max_spend_usd="0.003")
    statuses = hammer(gateway, key, 8, lambda status: status == 402)
    assert set(statuses) == {200, 402}
    # Refusals may come while another worker still holds part of the budget in a
    # grant; once the grants are idle and back, the last of it is spent.
    while True:
        assert wait_until_nothing_is_held(account, str(key["id"]))["reserved_micros"] == 0
        more = hammer(gateway, key, 1, lambda status: status == 402)
        if more == [402]:
            break
        statuses += more
    events = account.events(str(key["id"]), statuses.count(200))
    spent = sum(int(e["cost_micros"]) for e in events)  # type: ignore[call-overload]
    grants, _ = reservation_rows(gateway, str(key["id"]))
    print(f"{statuses.count(200)} admitted, {grants} grant(s): spent {spent} of {cap} (estimate {ESTIMATE})")
    assert grants >= 1
    assert cap <= spent <= cap + ESTIMATE  # all of the cap is usable, never more than one estimate over


def test_a_lowered_cap_takes_the_grant_back_on_every_worker_within_a_second(
    gateway: Running, account: Account
) -> None:
    key = account.mint("lowered", max_spend_usd=5)
    hammer(gateway, key, 4, all_admitted(160))
    assert reservation_rows(gateway, str(key["id"]))[0] >= 1
    lowered = httpx.patch(
        gateway.base + f"/v1/keys/{key['id']}",
        headers={"Authorization": f"Bearer {account.master_key}"},
        json={"max_spend_usd": 0},
    )
    assert lowered.status_code == 200, lowered.text
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {key['secret']}"}

    def fresh_connection_status(_: int = 0) -> int:
        return httpx.post(gateway.base + "/v1/chat/completions", json=BODY, headers=headers).status_code

    while fresh_connection_status() != 402:
        assert time.monotonic() - started < 1.0
    time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(fresh_connection_status, range(24))) == {402}
    assert wait_until_nothing_is_held(account, str(key["id"]))["reserved_micros"] == 0


def active_grants(data_dir: Path, key_id: str) -> int:
    engine = create_engine(f"sqlite:///{data_dir / 'spendgate.db'}")
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        reservations.c.key_id == key_id,
                        reservations.c.request_id.like("grant-%"),
                        reservations.c.state == "active",
                    )
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_a_stopping_worker_hands_its_grants_back(mock: MockUpstream, tmp_path: Path) -> None:
    running = start_up(tmp_path / "data", upstream_env(mock), workers=1)
    try:
        with ControlPlaneClient(running.grpc, running.admin_token) as admin:
            created = admin.create_account("stop", 10_000_000)
        account = Account(created.account.id, created.master_key_secret, running)
        key = account.mint("busy", max_spend_usd=5)
        hammer(running, key, 2, all_admitted(60))
        assert active_grants(running.data_dir, str(key["id"])) >= 1  # held (a retiring one may be too)
    finally:
        stop_up(running)
    assert active_grants(running.data_dir, str(key["id"])) == 0

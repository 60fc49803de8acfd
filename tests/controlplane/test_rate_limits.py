"""Rate limits in the ledger, over real gRPC on both backends: requests and tokens per
minute as token buckets, requests in flight as leased slots, grants' slices, and one
count for every control plane over the database."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from sqlalchemy import func, select

from clients.client import ControlPlaneClient, SpendgateRpcError
from controlplane.ledger import DEFAULT_TTL_MS
from controlplane.server import ControlPlane
from controlplane.store.schema import rate_buckets, reservations
from spendgate.v1 import keys_pb2, usage_pb2
from tests.conftest import FakeClock
from tests.controlplane.test_concurrency import check_ledger
from tests.controlplane.test_usage_rpc import settle_request

RATE = usage_pb2.REFUSAL_REASON_RATE_LIMIT


def limits(
    rpm: int | None = None, tpm: int | None = None, parallel: int | None = None
) -> keys_pb2.RateLimits:
    return keys_pb2.RateLimits(rpm_limit=rpm, tpm_limit=tpm, max_parallel_requests=parallel)


def check_slots(plane: ControlPlane) -> None:
    """A limited key's slots in flight are those its active reservations hold."""
    with plane.engine.connect() as conn:
        for bucket in conn.execute(select(rate_buckets)).mappings():
            held = conn.execute(
                select(func.coalesce(func.sum(reservations.c.slots), 0)).where(
                    reservations.c.key_id == bucket["key_id"], reservations.c.state == "active"
                )
            ).scalar_one()
            assert bucket["in_flight"] == held


def test_requests_per_minute_refill_continuously_and_say_when(
    plane: ControlPlane, master: ControlPlaneClient, service: ControlPlaneClient, clock: FakeClock
) -> None:
    key, _ = master.create_key("u", rate_limits=limits(rpm=3))
    first = service.reserve(key.id, "r1", 10)
    assert first.granted and first.rate.limits.rpm_limit == 3
    assert (first.rate.requests_remaining, first.rate.requests_reset_ms) == (2, 20_000)
    assert service.reserve(key.id, "r2", 10).granted and service.reserve(key.id, "r3", 10).granted
    refused = service.reserve(key.id, "r4", 10)
    assert not refused.granted and refused.reason == RATE
    assert refused.rate.refused == usage_pb2.RATE_LIMIT_DIMENSION_REQUESTS
    # One request comes back every 20 s (a little less is left to wait: real time ran too).
    assert 18_000 < refused.rate.retry_after_ms <= 20_000 and refused.rate.requests_remaining == 0
    assert service.reserve(key.id, "r1", 10).granted  # a replay takes nothing
    clock.advance(refused.rate.retry_after_ms)
    assert service.reserve(key.id, "r4", 10).granted
    assert not service.reserve(key.id, "r5", 10).granted
    clock.advance(60_000)  # never more than a minute's allowance
    assert [service.reserve(key.id, f"later{i}", 10).granted for i in range(4)] == [True] * 3 + [False]
    check_ledger(plane)


def test_tokens_are_counted_at_admission_and_corrected_at_settlement(
    plane: ControlPlane, master: ControlPlaneClient, service: ControlPlaneClient, clock: FakeClock
) -> None:
    key, _ = master.create_key("u", rate_limits=limits(tpm=1_000))
    assert service.reserve(key.id, "a", 10, tokens=600).rate.tokens_remaining == 400
    refused = service.reserve(key.id, "b", 10, tokens=600)
    assert refused.reason == RATE and refused.rate.refused == usage_pb2.RATE_LIMIT_DIMENSION_TOKENS
    assert 11_000 < refused.rate.retry_after_ms <= 12_000  # 200 tokens at 1000 a minute
    service.settle(settle_request(key.id, "a", inp=60, out=40))  # used 100 of its 600
    assert service.reserve(key.id, "b", 10, tokens=600).granted
    # Real usage above the estimate is a debt the next requests wait out.
    service.settle(settle_request(key.id, "b", inp=1_500, out=500))
    debt = service.reserve(key.id, "c", 10, tokens=1)
    assert debt.reason == RATE and debt.rate.tokens_remaining == 0
    assert debt.rate.retry_after_ms > 60_000
    clock.advance(debt.rate.retry_after_ms)
    assert service.reserve(key.id, "c", 10, tokens=1).granted
    check_ledger(plane)


def test_a_request_larger_than_the_whole_minute_goes_alone_into_a_full_bucket(
    master: ControlPlaneClient, service: ControlPlaneClient, clock: FakeClock
) -> None:
    key, _ = master.create_key("u", rate_limits=limits(tpm=1_000))
    assert service.reserve(key.id, "small", 10, tokens=500).granted
    refused = service.reserve(key.id, "huge", 10, tokens=50_000)
    # Until the bucket is full again: the 500 tokens' 30 s (less what real time has passed since).
    assert refused.reason == RATE and 20_000 < refused.rate.retry_after_ms <= 30_000
    clock.advance(30_000)
    assert service.reserve(key.id, "huge", 10, tokens=50_000).granted
    assert not service.reserve(key.id, "next", 10, tokens=1).granted
    other, _ = master.create_key("v", rate_limits=limits(tpm=1_000))
    assert service.reserve(other.id, "enormous", 10, tokens=2**63 - 1).granted  # its debt fits the column
    assert service.reserve(other.id, "after", 10, tokens=1).rate.retry_after_ms > 0


def test_a_slot_is_held_until_settle_release_or_the_lease_expires(
    plane: ControlPlane, master: ControlPlaneClient, service: ControlPlaneClient, clock: FakeClock
) -> None:
    key, _ = master.create_key("u", rate_limits=limits(parallel=2))
    assert service.reserve(key.id, "a", 10).granted and service.reserve(key.id, "b", 10, ttl_ms=1_000).granted
    refused = service.reserve(key.id, "c", 10)
    assert refused.reason == RATE and refused.rate.refused == usage_pb2.RATE_LIMIT_DIMENSION_PARALLEL
    assert refused.rate.in_flight == 2 and refused.rate.retry_after_ms == 1_000
    service.settle(settle_request(key.id, "a"))
    assert service.reserve(key.id, "c", 10).granted
    assert service.release("c")
    assert service.reserve(key.id, "d", 10).granted
    assert not service.reserve(key.id, "e", 10).granted
    clock.advance(1_000)  # "b"'s worker died: its lease expires and its slot comes back
    assert service.reserve(key.id, "e", 10).granted
    check_slots(plane)
    check_ledger(plane)


def test_a_released_request_gives_its_request_and_tokens_back(
    master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    key, _ = master.create_key("u", rate_limits=limits(rpm=1, tpm=100))
    assert service.reserve(key.id, "a", 10, tokens=100).granted
    assert not service.reserve(key.id, "b", 10, tokens=1).granted
    assert service.release("a")  # nothing reached the provider
    back = service.reserve(key.id, "b", 10, tokens=100)
    assert back.granted and back.rate.requests_remaining == 0 and back.rate.tokens_remaining == 0


def test_a_grant_holds_a_slice_and_returns_what_it_did_not_use(
    plane: ControlPlane, master: ControlPlaneClient, service: ControlPlaneClient, clock: FakeClock
) -> None:
    key, _ = master.create_key("u", rate_limits=limits(rpm=400, parallel=8))
    want = usage_pb2.RateSlice(requests=1_000, tokens=0, slots=4)
    least = usage_pb2.RateSlice(requests=4, slots=1)
    assert not service.grant(key.id, "no-slice", 1_000, 1).granted  # a limited key's grant needs one
    grant = service.grant(key.id, "g", 1_000, 1, want_slice=want, min_slice=least)
    # A quarter of what is left in each limited dimension, at most what was asked for.
    assert grant.granted and (grant.slice.requests, grant.slice.slots) == (100, 2)
    assert grant.rate.requests_remaining == 300 and grant.rate.in_flight == 2
    assert service.grant(key.id, "g", 1_000, 1, want_slice=want, min_slice=least).slice == grant.slice
    slices = [service.grant(key.id, f"g{i}", 1_000, 1, want_slice=want, min_slice=least) for i in range(5)]
    assert [(s.slice.requests, s.slice.slots) for s in slices] == [(75, 1), (56, 1), (42, 1), (0, 0), (0, 0)]
    assert [s.granted for s in slices] == [
        True,
        True,
        True,
        False,
        False,
    ]  # 3 of 8 slots left: a quarter is 0
    check_slots(plane)
    assert service.release("g", return_slice=usage_pb2.RateSlice(requests=60))  # it admitted 40
    after = service.reserve(key.id, "r", 10)
    assert after.rate.requests_remaining == 300 - 75 - 56 - 42 + 60 - 1 and after.rate.in_flight == 4
    check_slots(plane)
    check_ledger(plane)
    clock.advance(DEFAULT_TTL_MS)  # the worker holding the other grants died: their leases expire
    assert service.reserve(key.id, "after", 10).rate.in_flight == 1  # "r"'s expired too; "after" holds one
    check_slots(plane)


def test_limits_are_set_shown_changed_and_removed(
    master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    key, _ = master.create_key("u", rate_limits=limits(rpm=60, parallel=2))
    shown = master.get_key(key.id).rate_limits
    assert (shown.rpm_limit, shown.HasField("tpm_limit"), shown.max_parallel_requests) == (60, False, 2)
    changed = master.update_key(key.id, rate_limits=limits(tpm=5_000, parallel=0))
    assert changed.rate_limits == limits(rpm=60, tpm=5_000)
    assert master.update_key(key.id, name="renamed").rate_limits == limits(rpm=60, tpm=5_000)
    gone = master.update_key(key.id, rate_limits=limits(rpm=0, tpm=0))
    assert not gone.HasField("rate_limits")
    assert service.reserve(key.id, "free", 10).granted and not service.reserve(key.id, "free", 10).HasField(
        "rate"
    )
    plain, _ = master.create_key("plain")
    listed = {k.name: k.HasField("rate_limits") for k in master.list_keys().keys}
    assert not plain.HasField("rate_limits") and listed == {"master": False, "renamed": False, "plain": False}


@pytest.mark.parametrize("bad", [limits(rpm=0), limits(tpm=-1), limits(parallel=-5), limits(rpm=10**13)])
def test_bad_limits_are_refused_and_nothing_is_written(
    master: ControlPlaneClient, bad: keys_pb2.RateLimits
) -> None:
    with pytest.raises(SpendgateRpcError) as refused:
        master.create_key("u", rate_limits=bad)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and "rate_limits." in refused.value.details
    assert [k.name for k in master.list_keys().keys] == ["master"]
    key, _ = master.create_key("ok", rate_limits=limits(rpm=5, tpm=9))
    if bad != limits(rpm=0):  # which on an update removes the limit
        with pytest.raises(SpendgateRpcError):
            master.update_key(key.id, rate_limits=bad)
        assert master.get_key(key.id).rate_limits == limits(rpm=5, tpm=9)


def test_every_control_plane_counts_one_limit(make_plane: Callable[..., ControlPlane], db_url: str) -> None:
    """Two control planes over one database, 12 callers each: an rpm of 10 admits 10."""
    planes = [make_plane(db_url), make_plane(db_url)]
    with ControlPlaneClient(planes[0].address, planes[0].tokens.admin) as admin:
        secret = admin.create_account("acme", 10_000_000).master_key_secret
    with ControlPlaneClient(planes[1].address, secret) as master:
        key, _ = master.create_key("u", rate_limits=limits(rpm=10, parallel=50))
    services = [ControlPlaneClient(p.address, p.tokens.service) for p in planes]
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            granted = list(
                pool.map(lambda i: services[i % 2].reserve(key.id, uuid.uuid4().hex, 10).granted, range(24))
            )
    finally:
        for client in services:
            client.close()
    assert granted.count(True) == 10
    check_slots(planes[0])
    check_ledger(planes[0])


def test_removing_every_limit_forgets_the_counts_and_a_new_limit_starts_afresh(
    plane: ControlPlane, master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    key, _ = master.create_key("u", rate_limits=limits(rpm=2, parallel=1))
    assert service.reserve(key.id, "held", 10).granted and service.reserve(key.id, "held2", 10).reason == RATE
    master.update_key(key.id, rate_limits=limits(rpm=0, parallel=0))
    service.settle(settle_request(key.id, "held"))  # its slot ends while the key has no limits
    master.update_key(key.id, rate_limits=limits(rpm=2, parallel=1))
    fresh = service.reserve(key.id, "fresh", 10)
    assert fresh.granted and fresh.rate.requests_remaining == 1 and fresh.rate.in_flight == 1
    check_slots(plane)

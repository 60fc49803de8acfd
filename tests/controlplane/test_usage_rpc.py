"""UsageService over real gRPC: reserve, settle, release, their idempotency,
the admission rule, leases, rollups and the catalog."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from clients.client import ControlPlaneClient, SpendgateRpcError
from spendgate.v1 import usage_pb2
from tests.conftest import FakeClock

# gpt-4o-mini in the built-in catalog: input 150_000, cached 75_000, output 600_000 micros per Mtok.
MINI = ("openai", "gpt-4o-mini")


def settle_request(
    key_id: str, request_id: str, inp: int = 1000, out: int = 500, **extra: Any
) -> usage_pb2.SettleRequest:
    provider, model = extra.pop("model", MINI)
    return usage_pb2.SettleRequest(
        request_id=request_id,
        key_id=key_id,
        provider=provider,
        model=model,
        units=usage_pb2.Units(input_tokens=inp, output_tokens=out, **extra.pop("units", {})),
        latency_ms=int(extra.pop("latency_ms", 100)),
        **extra,
    )


def test_reserve_then_settle_commits_actual_and_releases_the_rest(
    master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    key, _ = master.create_key("u", cap_micros=1_000_000)
    granted = service.reserve(key.id, "req-1", 400_000)
    assert granted.granted and granted.reserved_micros == 400_000 and granted.remaining_micros == 600_000
    assert granted.cap_micros == 1_000_000 and granted.expires_ms > 0
    settled = service.settle(settle_request(key.id, "req-1", inp=1000, out=500))
    # ceil((1000*150000 + 500*600000) / 1e6) = ceil(450000/1e6 * 1000)... = 450
    assert settled.event.cost_micros == 450 and not settled.duplicate
    assert settled.event.fee_micros == 32  # ceil(450 * 7%) = ceil(31.5)
    after = master.get_key(key.id)
    assert (after.spent_micros, after.reserved_micros, after.remaining_micros) == (450, 0, 999_550)


def test_every_operation_is_idempotent_by_request_id(
    master: ControlPlaneClient, service: ControlPlaneClient, clock: FakeClock
) -> None:
    key, _ = master.create_key("u", cap_micros=1_000_000)
    first = service.reserve(key.id, "req-1", 400_000)
    clock.advance(60_000)
    again = service.reserve(key.id, "req-1", 400_000)  # holds nothing more; renews the lease
    assert again.granted and again.expires_ms >= first.expires_ms + 60_000
    assert master.get_key(key.id).reserved_micros == 400_000
    one = service.settle(settle_request(key.id, "req-1"))
    two = service.settle(settle_request(key.id, "req-1", inp=99999))
    assert two.duplicate and two.event == one.event
    assert service.release("req-1") is False  # already settled
    assert master.get_key(key.id).spent_micros == one.event.cost_micros
    assert len(master.list_usage_events(key.id).events) == 1

    service.reserve(key.id, "req-2", 100_000)
    assert service.release("req-2") is True
    assert service.release("req-2") is False
    assert master.get_key(key.id).reserved_micros == 0


def test_request_id_cannot_be_reused_for_another_key(
    master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    a, _ = master.create_key("a")
    b, _ = master.create_key("b")
    service.reserve(a.id, "shared", 10)
    with pytest.raises(SpendgateRpcError) as info:
        service.reserve(b.id, "shared", 10)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and info.value.details.startswith(
        "request_id:"
    )


def test_admits_while_budget_remains_then_refuses_with_numbers(
    master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    key, _ = master.create_key("u", cap_micros=1_000)
    assert service.reserve(key.id, "r1", 800).granted
    # 200 left: not strict, so a larger estimate is still admitted (bounded overdraft).
    second = service.reserve(key.id, "r2", 5_000)
    assert second.granted and second.remaining_micros == 0
    refused = service.reserve(key.id, "r3", 1)
    assert not refused.granted and refused.reason == usage_pb2.REFUSAL_REASON_KEY_CAP
    assert (refused.cap_micros, refused.spent_micros, refused.reserved_micros) == (1_000, 0, 5_800)
    assert master.get_key(key.id).reserved_micros == 5_800  # the refusal held nothing


def test_strict_key_needs_the_whole_estimate_to_fit(
    master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    key, _ = master.create_key("u", cap_micros=1_000, strict=True)
    assert service.reserve(key.id, "r1", 800).granted
    assert not service.reserve(key.id, "r2", 201).granted
    assert service.reserve(key.id, "r3", 200).granted


def test_zero_cap_refuses_everything_and_no_cap_admits(
    master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    zero, _ = master.create_key("zero", cap_micros=0)
    assert not service.reserve(zero.id, "z", 1).granted
    free, _ = master.create_key("uncapped")
    big = service.reserve(free.id, "f", 50_000_000)
    assert big.granted and not big.HasField("cap_micros") and not big.HasField("remaining_micros")


def test_wallet_is_enforced_and_charged_cost_plus_fee(
    new_account: Callable[..., ControlPlaneClient], service: ControlPlaneClient, admin: ControlPlaneClient
) -> None:
    poor = new_account("poor", credit_micros=1_000)
    key, _ = poor.create_key("u")  # no key cap: only the wallet limits
    first = service.reserve(key.id, "w1", 900)
    assert first.granted and first.wallet_remaining_micros == 1_000 - 900 - 63  # fee held too
    overdraft = service.reserve(key.id, "w2", 100)
    assert overdraft.granted and overdraft.wallet_remaining_micros == 0  # 37 left > 0: admitted
    refused = service.reserve(key.id, "w3", 10)
    assert not refused.granted and refused.reason == usage_pb2.REFUSAL_REASON_WALLET
    service.release("w1")
    service.release("w2")
    event = service.settle(settle_request(key.id, "w4", inp=1000, out=500)).event
    account = admin.credit_wallet(poor.account_id, 5_000)  # type: ignore[attr-defined]
    assert account.spent_micros == event.cost_micros + event.fee_micros
    assert account.credit_micros == 6_000 and account.reserved_micros == 0


def test_revoked_key_reservation_is_refused(master: ControlPlaneClient, service: ControlPlaneClient) -> None:
    key, _ = master.create_key("u")
    master.revoke_key(key.id)
    refused = service.reserve(key.id, "r", 1)
    assert not refused.granted and refused.reason == usage_pb2.REFUSAL_REASON_KEY_REVOKED


def test_leases_expire_back_into_the_budget(
    master: ControlPlaneClient, service: ControlPlaneClient, clock: FakeClock
) -> None:
    key, _ = master.create_key("u", cap_micros=1_000)
    assert service.reserve(key.id, "lease", 1_000, ttl_ms=5_000).granted
    assert not service.reserve(key.id, "blocked", 1).granted
    clock.advance(5_001)
    assert service.reserve(key.id, "after-expiry", 1).granted
    assert master.get_key(key.id).reserved_micros == 1
    # The usage behind an expired lease still gets billed when it settles.
    late = service.settle(settle_request(key.id, "lease", inp=1000, out=0))
    assert late.event.cost_micros == 150
    after = master.get_key(key.id)
    assert (after.spent_micros, after.reserved_micros) == (150, 1)


def test_sweeper_expires_leases_without_traffic(
    master: ControlPlaneClient, service: ControlPlaneClient, clock: FakeClock, plane: object
) -> None:
    key, _ = master.create_key("u", cap_micros=1_000)
    service.reserve(key.id, "lease", 700, ttl_ms=1_000)
    clock.advance(1_001)
    assert plane.ledger.expire_stale() == 1  # type: ignore[attr-defined]
    assert master.get_key(key.id).reserved_micros == 0


def test_daily_cap_resets_at_utc_midnight(
    master: ControlPlaneClient, service: ControlPlaneClient, clock: FakeClock
) -> None:
    key, _ = master.create_key("u", cap_micros=1_000, cap_period="daily")
    assert (
        key.period_reset_ms > key.period_start_ms and key.period_reset_ms - key.period_start_ms == 86_400_000
    )
    service.reserve(key.id, "r1", 100)
    service.settle(settle_request(key.id, "r1", inp=1000, out=2000))  # 150 + 1200 = 1350 > cap
    assert not service.reserve(key.id, "r2", 1).granted
    clock.advance(key.period_reset_ms - clock())
    fresh = service.reserve(key.id, "r3", 1)
    assert fresh.granted and fresh.spent_micros == 0


def test_settle_prices_cached_and_cache_write_tokens_by_their_own_columns(
    master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    key, _ = master.create_key("u")
    # claude-sonnet-4-6: input 3_000_000, cache write 3_750_000, cache read 300_000, output 15_000_000
    event = service.settle(
        settle_request(
            key.id,
            "c1",
            inp=10,
            out=100,
            model=("anthropic", "claude-sonnet-4-6"),
            units={"cached_input_tokens": 1000, "cache_write_tokens": 2000},
        )
    ).event
    assert (
        event.cost_micros
        == (10 * 3_000_000 + 100 * 15_000_000 + 1000 * 300_000 + 2000 * 3_750_000) // 1_000_000
    )


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: setattr(r, "model", "gpt-nonexistent"), "model"),
        (lambda r: setattr(r, "provider", ""), "provider"),
        (lambda r: setattr(r, "request_id", ""), "request_id"),
        (lambda r: setattr(r, "key_id", ""), "key_id"),
        (lambda r: setattr(r.units, "output_tokens", -5), "units"),
    ],
)
def test_bad_settlements_are_refused_and_change_nothing(
    master: ControlPlaneClient,
    service: ControlPlaneClient,
    mutate: Callable[[usage_pb2.SettleRequest], None],
    field: str,
) -> None:
    key, _ = master.create_key("u", cap_micros=1_000_000)
    service.reserve(key.id, "r", 5_000)
    request = settle_request(key.id, "r")
    mutate(request)
    with pytest.raises(SpendgateRpcError) as info:
        service.settle(request)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and info.value.details.startswith(field), (
        info.value.details
    )
    after = master.get_key(key.id)
    assert (after.spent_micros, after.reserved_micros) == (0, 5_000)
    assert not master.list_usage_events(key.id).events


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("", 1), "request_id"),
        (("r", -1), "amount_micros"),
        (("r", 1, -5), "ttl_ms"),
        (("x" * 101, 1), "request_id"),
    ],
)
def test_bad_reservations_name_the_field(
    master: ControlPlaneClient, service: ControlPlaneClient, args: tuple[object, ...], field: str
) -> None:
    key, _ = master.create_key("u")
    with pytest.raises(SpendgateRpcError) as info:
        service.reserve(key.id, *args)  # type: ignore[arg-type]
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and info.value.details.startswith(field)


def test_reserve_for_unknown_key_is_not_found(service: ControlPlaneClient) -> None:
    with pytest.raises(SpendgateRpcError) as info:
        service.reserve("key_nope", "r", 1)
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_get_usage_rolls_up_per_key_and_model_for_the_callers_keys_only(
    new_account: Callable[..., ControlPlaneClient], service: ControlPlaneClient, clock: FakeClock
) -> None:
    alice, bob = new_account("alice"), new_account("bob")
    a1, _ = alice.create_key("user_1")
    a2, _ = alice.create_key("user_2")
    b1, _ = bob.create_key("bob_user")
    start = clock()
    service.settle(settle_request(a1.id, "e1", inp=1000, out=100, latency_ms=100))
    service.settle(settle_request(a1.id, "e2", inp=3000, out=300, latency_ms=300))
    service.settle(
        settle_request(
            a1.id,
            "e3",
            inp=10,
            out=10,
            model=("anthropic", "claude-haiku-4-5"),
            units={"cached_input_tokens": 90},
        )
    )
    service.settle(settle_request(a2.id, "e4", inp=5, out=5))
    service.settle(settle_request(b1.id, "e5", inp=7, out=7))
    usage = alice.get_usage(start - 1, clock() + 1)
    by_key = {k.key_id: k for k in usage.by_key}
    assert set(by_key) == {a1.id, a2.id}
    row = by_key[a1.id]
    assert row.name == "user_1" and row.requests == 3
    assert row.input_tokens == 1000 + 3000 + 10 + 90 and row.output_tokens == 410
    models = {(m.provider, m.model): m for m in row.by_model}
    mini = models[MINI]
    assert (mini.requests, mini.input_tokens, mini.output_tokens, mini.avg_latency_ms) == (2, 4000, 400, 200)
    events = alice.list_usage_events(a1.id).events
    assert (
        row.cost_micros
        == sum(e.cost_micros for e in events)
        == mini.cost_micros + models[("anthropic", "claude-haiku-4-5")].cost_micros
    )
    assert row.fee_micros == sum(e.fee_micros for e in events)
    # The range is [from, to): an empty window has nothing.
    assert not alice.get_usage(clock() + 10_000, clock() + 20_000).by_key


def test_list_usage_events_newest_first_paginated_with_cap_progress(
    master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    key, _ = master.create_key("u", cap_micros=10_000_000)
    for i in range(5):
        service.settle(settle_request(key.id, f"ev-{i}", inp=1000 * (i + 1)))
    first = master.list_usage_events(key.id, page_size=2)
    assert [e.request_id for e in first.events] == ["ev-4", "ev-3"]
    assert first.key.spent_micros == sum(
        e.cost_micros for e in master.list_usage_events(key.id, page_size=10).events
    )
    assert first.key.remaining_micros == 10_000_000 - first.key.spent_micros
    second = master.list_usage_events(key.id, page_size=2, page_token=first.next_page_token)
    third = master.list_usage_events(key.id, page_size=2, page_token=second.next_page_token)
    assert [e.request_id for e in [*second.events, *third.events]] == ["ev-2", "ev-1", "ev-0"]
    assert third.next_page_token == ""


def test_list_prices_and_effective_dated_upsert(
    master: ControlPlaneClient, service: ControlPlaneClient, admin: ControlPlaneClient, clock: FakeClock
) -> None:
    listing = master.list_prices()
    assert listing.fee_bps == 700
    names = {(p.provider, p.model) for p in listing.prices}
    assert {("openai", "gpt-5.4"), ("anthropic", "claude-sonnet-4-6"), MINI} <= names
    key, _ = master.create_key("u")
    before = service.settle(settle_request(key.id, "old", inp=1_000_000, out=0)).event
    assert before.cost_micros == 150_000
    clock.advance(1000)
    repriced = admin.upsert_price(
        usage_pb2.Price(
            provider="openai",
            model="gpt-4o-mini",
            input_micros_per_mtok=300_000,
            output_micros_per_mtok=600_000,
        )
    )
    assert repriced.effective_from_ms == clock() or abs(repriced.effective_from_ms - clock()) < 1000
    clock.advance(1000)
    after = service.settle(settle_request(key.id, "new", inp=1_000_000, out=0)).event
    assert after.cost_micros == 300_000
    # An event that started before the change is priced with the old row.
    backdated = service.settle(
        settle_request(key.id, "late", inp=1_000_000, out=0, started_ms=before.ts_ms)
    ).event
    assert backdated.cost_micros == 150_000
    history = [p for p in master.list_prices(include_history=True).prices if (p.provider, p.model) == MINI]
    assert [p.input_micros_per_mtok for p in history] == [150_000, 300_000]
    with pytest.raises(SpendgateRpcError) as info:
        admin.upsert_price(usage_pb2.Price(provider="openai", model="", input_micros_per_mtok=1))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and info.value.details.startswith(
        "price.model"
    )


def test_characters_and_audio_are_priced_by_their_own_columns(
    master: ControlPlaneClient, service: ControlPlaneClient, admin: ControlPlaneClient
) -> None:
    admin.upsert_price(
        usage_pb2.Price(
            provider="acme",
            model="voice-1",
            input_micros_per_mtok=0,
            output_micros_per_mtok=0,
            characters_micros_per_mchar=180_000_000,  # $180 per million characters
            audio_seconds_micros_per_msec=120_000_000,  # $0.12 per second
        )
    )
    listed = {(p.provider, p.model): p for p in master.list_prices().prices}
    assert listed[("acme", "voice-1")].characters_micros_per_mchar == 180_000_000
    assert not listed[("acme", "voice-1")].HasField("images_micros_per_mimage")
    key, _ = master.create_key("u")
    event = service.settle(
        usage_pb2.SettleRequest(
            request_id="tts",
            key_id=key.id,
            provider="acme",
            model="voice-1",
            units=usage_pb2.Units(characters=1234, audio_ms=2500),
        )
    ).event
    assert event.units.characters == 1234 and event.units.audio_ms == 2500
    assert event.cost_micros == -(-(1234 * 180_000_000 * 1000 + 2500 * 120_000_000) // 10**9)
    (row,) = master.get_usage(0, 2**62).by_key
    assert (row.characters, row.audio_ms) == (1234, 2500)
    with pytest.raises(SpendgateRpcError) as info:
        service.settle(
            usage_pb2.SettleRequest(
                request_id="img",
                key_id=key.id,
                provider="acme",
                model="voice-1",
                units=usage_pb2.Units(images=1),
            )
        )
    assert (
        info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        and "no catalog price for images" in info.value.details
    )

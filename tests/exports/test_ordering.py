"""The cursor's order under concurrent writers: on PostgreSQL an event can commit after
one with a higher seq; the lagged high-water mark keeps the cursor from passing it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from controlplane.exports import SinkConfig, SinkExporter
from controlplane.exports.config import load_sinks
from controlplane.exports.runner import Policy, Step, Watermark
from controlplane.keystore import KeySpec
from controlplane.server import ControlPlane
from controlplane.store.schema import usage_events
from tests.exports.conftest import MAPPED, Events
from tests.exports.fakes import running, sink_options


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_watermark_is_the_highest_seq_seen_at_least_lag_ago() -> None:
    ticks = Ticks()
    mark = Watermark(10, ticks)
    assert mark.observe(5) == 0
    ticks.now += 4
    assert mark.observe(8) == 0
    ticks.now += 6
    assert mark.observe(9) == 5  # 5 was seen 10 s ago; 8 only 6 s ago
    ticks.now += 4
    assert mark.observe(9) == 8
    assert Watermark(0, ticks).observe(7) == 7


def _raw_event(request_id: str, key_id: str, account_id: str) -> dict[str, object]:
    zero = dict.fromkeys(
        ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens"), 0
    )
    return {
        "request_id": request_id,
        "key_id": key_id,
        "account_id": account_id,
        "ts_ms": 1,
        "provider": "openai",
        "model": "gpt-4o-mini",
        **zero,
        "input_tokens": 10,
        "cost_micros": 3,
        "fee_micros": 1,
        "latency_ms": 1,
        "ttfb_ms": 1,
        "status": "ok",
        "http_status": 200,
        "estimated": False,
    }


@pytest.mark.postgres
def test_an_event_committed_after_a_higher_seq_is_not_skipped(
    pg_database: str, make_plane: Callable[..., ControlPlane]
) -> None:
    plane = make_plane(pg_database, exports=[])
    account, _m, _s = plane.keystore.create_account("acme", 100_000_000)
    key, _ = plane.keystore.create_key(account.id, KeySpec("u", metadata=tuple(MAPPED.items())))
    events = Events(plane, key.id, account.id, [])
    ticks = Ticks()
    with running("openmeter") as fake:

        def exporter(name: str, lag: float) -> SinkExporter:
            config = SinkConfig(name, "openmeter", sink_options("openmeter", fake.url))
            return SinkExporter(
                name, config.build({}), events.cursors, Policy(lag_seconds=lag), monotonic=ticks
            )

        naive, lagged = exporter("naive", 0), exporter("lagged", 10)
        slow = plane.engine.connect()
        tx = slow.begin()
        slow.execute(
            usage_events.insert().values(_raw_event("slow", key.id, account.id))
        )  # seq taken, not committed
        fast = events.settle(1, prefix="fast")  # a higher seq, committed first
        assert lagged.step() is Step.IDLE  # the newest seq was only just seen
        assert naive.step() is Step.DELIVERED  # without the lag: past the uncommitted one
        tx.commit()
        slow.close()
        ticks.now += 10
        assert lagged.run_until_caught_up() is Step.IDLE
        assert naive.run_until_caught_up() is Step.IDLE
        by_sink = {s.sink: s for s in events.cursors.status()}
        with plane.engine.connect() as conn:
            top = conn.execute(select(func.max(usage_events.c.seq))).scalar_one()
        assert by_sink["lagged"].position == by_sink["naive"].position == top
        assert by_sink["lagged"].exported == 2  # both events
        assert by_sink["naive"].exported == 1  # "slow" was skipped for good: what the lag prevents
        assert fake.received.count("slow") == 1 and fake.received.count(fast[0]) == 2


def test_the_lag_defaults_to_zero_on_sqlite_and_ten_seconds_on_postgresql() -> None:
    (sink,) = load_sinks({"SPENDGATE_EXPORTS": "openmeter"}, config_file="")
    assert sink.policy(postgres=False).lag_seconds == 0
    assert sink.policy(postgres=True).lag_seconds == 10


def test_sinks_can_be_configured_from_the_environment_alone() -> None:
    env = {
        "SPENDGATE_EXPORTS": "stripe, usage-meter",
        "SPENDGATE_EXPORT_STRIPE_API_KEY": "sk_live_x",
        "SPENDGATE_EXPORT_STRIPE_BATCH_SIZE": "50",
        "SPENDGATE_EXPORT_USAGE_METER_KIND": "openmeter",
        "SPENDGATE_EXPORT_USAGE_METER_SUBJECT": "{account_id}",
    }
    stripe, meter = load_sinks(env, config_file="")
    assert (stripe.name, stripe.kind, stripe.options["api_key"], stripe.policy(False).batch_size) == (
        "stripe",
        "stripe",
        "sk_live_x",
        50,
    )
    assert (meter.name, meter.kind, meter.options["subject"]) == ("usage-meter", "openmeter", "{account_id}")
    with pytest.raises(ValueError, match="needs api_key"):
        load_sinks({"SPENDGATE_EXPORTS": "lago"}, config_file="")[0].build({})
    with pytest.raises(ValueError, match="api_key_env: LAGO_KEY is not set"):
        load_sinks({"SPENDGATE_EXPORTS": "lago", "SPENDGATE_EXPORT_LAGO_API_KEY_ENV": "LAGO_KEY"}, "")[
            0
        ].build({})

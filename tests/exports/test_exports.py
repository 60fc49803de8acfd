"""Usage events reach Stripe, Lago and OpenMeter (fakes on loopback, driven by the official
clients) once each, with our request_id as the sink's idempotency key; the cursor moves
only after the sink said yes; a failing sink is retried with backoff and loses nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from sqlalchemy import update

from controlplane.exports import ExportRunner, SinkConfig, SinkExporter
from controlplane.exports.runner import Policy, Step
from controlplane.exports.to_lago import cents
from controlplane.keystore import KeySpec
from controlplane.server import ControlPlane
from controlplane.store.schema import keys, usage_events
from tests.exports.conftest import MAPPED, Events
from tests.exports.fakes import FakeSink, running, sink_options

KINDS = ["stripe", "lago", "openmeter"]


def exporter(events: Events, fake: FakeSink, name: str = "", **policy: float | int | bool) -> SinkExporter:
    config = SinkConfig(name or fake.kind, fake.kind, sink_options(fake.kind, fake.url))
    return SinkExporter(
        config.name,
        config.build({}),
        events.cursors,
        Policy(**{"batch_size": 3, **policy}),  # type: ignore[arg-type]
    )


def costs(events: Events) -> dict[str, tuple[int, int]]:
    with events.plane.engine.connect() as conn:
        rows = conn.execute(usage_events.select()).mappings().all()
    return {r["request_id"]: (r["cost_micros"], r["ts_ms"]) for r in rows}


def wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("kind", KINDS)
def test_each_event_arrives_once_keyed_by_its_request_id(kind: str, events: Events) -> None:
    ids = events.settle(7)
    with running(kind) as fake:
        ex = exporter(events, fake)
        assert ex.run_until_caught_up() is Step.IDLE
        assert fake.ids() == sorted(ids) and fake.received == ids and fake.refusals == []
        for rid, (cost, ts_ms) in costs(events).items():
            got = fake.stored[rid]
            assert cost > 0
            if kind == "stripe":
                assert got["identifier"] == rid and got["event_name"] == "ai_usage"
                assert got["payload[value]"] == str(cost) and got["payload[stripe_customer_id]"] == "cus_42"
                assert got["timestamp"] == str(ts_ms // 1000)
            elif kind == "lago":
                assert got["transaction_id"] == rid and got["external_subscription_id"] == "sub_42"
                assert got["code"] == "ai_usage" and got["precise_total_amount_cents"] == cents(cost)
                props = got["properties"]
                assert props["cost_micros"] == cost and isinstance(props["cost_micros"], int)
                assert props["input_tokens"] >= 1000 and props["key_id"] == events.key_id
            else:
                assert got["id"] == rid and got["subject"] == "user_42" and got["type"] == "ai.usage"
                assert got["source"] == "spendgate" and got["data"]["cost_micros"] == cost
                assert got["data"]["total_micros"] > cost  # the fee, as an integer too
        (status,) = events.cursors.status()
        assert (status.position, status.behind, status.exported, status.last_error) == (
            max(events.cursors.events(0, 10**9, 100), key=lambda e: e.seq).seq,
            0,
            7,
            "",
        )
        assert status.last_success_ms is not None
        sent = len(fake.received)
        more = events.settle(2)
        assert ex.run_until_caught_up() is Step.IDLE
        assert fake.received[sent:] == more  # only what is new: the cursor held


@pytest.mark.parametrize("kind", KINDS)
def test_a_failing_sink_is_retried_with_backoff_and_nothing_is_lost(kind: str, events: Events) -> None:
    ids = events.settle(5)
    with running(kind) as fake:
        fake.fail_next(10**6)
        runner = ExportRunner([exporter(events, fake, backoff_seconds=0.05, max_backoff_seconds=0.4)])
        runner.start()
        try:
            wait_for(lambda: events.cursors.status()[0].failures >= 4)
            (status,) = events.cursors.status()
            assert status.position == 0 and status.behind == 5 and "500" in status.last_error
            assert fake.stored == {}
            fake.fail_next(0)
            wait_for(lambda: events.cursors.status()[0].behind == 0)
        finally:
            runner.stop()
        assert fake.ids() == sorted(ids)
        (status,) = events.cursors.status()
        assert (status.failures, status.last_error) == (0, "")
        gaps = [b - a for a, b in zip(fake.attempts, fake.attempts[1:], strict=False)][:4]
        # 0.05, 0.1, 0.2, 0.4 s: doubling from backoff_seconds (a little slack for scheduling)
        for gap, want in zip(gaps, (0.05, 0.1, 0.2, 0.4), strict=True):
            assert gap >= want * 0.9, gaps


@pytest.mark.parametrize("kind", KINDS)
def test_a_key_without_the_mapping_stops_the_sink_there_and_skips_nothing(kind: str, events: Events) -> None:
    bare, _ = events.plane.keystore.create_key(events.account_id, KeySpec("no_mapping"))
    first = events.settle(2)
    stuck = events.settle(1, key_id=bare.id, prefix="bare")
    events.settle(2)
    with running(kind) as fake:
        ex = exporter(events, fake, batch_size=10)
        assert ex.run_until_caught_up() is Step.FAILED
        assert fake.ids() == sorted(first)
        (status,) = events.cursors.status()
        assert bare.id in status.last_error and status.behind == 3
        if kind == "openmeter":  # the default subject is the key id; this sink maps metadata.customer
            assert "metadata.customer" in status.last_error
        with events.plane.engine.begin() as conn:
            conn.execute(update(keys).where(keys.c.id == bare.id).values(metadata=json.dumps(MAPPED)))
        assert ex.run_until_caught_up() is Step.IDLE
        assert fake.ids() == sorted(events.request_ids) and stuck[0] in fake.stored


def test_a_second_exporter_waits_for_the_lease(events: Events) -> None:
    events.settle(4)
    with running("openmeter") as fake:
        one = exporter(events, fake, lease_seconds=60)
        two = exporter(events, fake, lease_seconds=60)
        assert one.step() is Step.DELIVERED
        assert two.step() is Step.NOT_OURS
        assert one.run_until_caught_up() is Step.IDLE
        assert fake.received == events.request_ids


def test_the_control_plane_exports_in_the_background(
    make_plane: Callable[..., ControlPlane], db_url: str
) -> None:
    with running("stripe") as fake:
        options = sink_options("stripe", fake.url) | {"poll_seconds": 0.05, "lag_seconds": 0}
        plane = make_plane(db_url, exports=[SinkConfig("billing", "stripe", options)])
        account, _m, _s = plane.keystore.create_account("acme", 100_000_000)
        key, _ = plane.keystore.create_key(account.id, KeySpec("u", metadata=tuple(MAPPED.items())))
        events = Events(plane, key.id, account.id, [])
        ids = events.settle(3)
        wait_for(lambda: fake.ids() == sorted(ids))
        more = events.settle(2)
        wait_for(lambda: len(fake.stored) == 5)
        assert fake.received == ids + more
        wait_for(lambda: events.cursors.status()[0].behind == 0)

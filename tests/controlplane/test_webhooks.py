"""Threshold webhooks over real gRPC, on SQLite and PostgreSQL, delivered over real HTTP to a
receiver that checks every signature: crossings fire once, retries keep the event id, a
restart loses nothing, two control planes never deliver one event twice."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from sqlalchemy.exc import IntegrityError

from clients.client import ControlPlaneClient, SpendgateRpcError
from controlplane import alerts
from controlplane.delivery import Policy, sign
from controlplane.server import ControlPlane
from controlplane.store.schema import webhook_outbox
from spendgate.v1 import webhooks_pb2
from tests.conftest import FakeClock
from tests.controlplane.test_usage_rpc import settle_request
from tests.receiver import Receiver, running_receiver, verify

DEAD = webhooks_pb2.WEBHOOK_DELIVERY_STATUS_DEAD
PENDING = webhooks_pb2.WEBHOOK_DELIVERY_STATUS_PENDING
DELIVERED = webhooks_pb2.WEBHOOK_DELIVERY_STATUS_DELIVERED
# gpt-4o-mini output is 600_000 micros per Mtok: `out` output tokens cost 0.6 × out micros.
CAP = 6_000


@pytest.fixture
def plane(make_plane: Callable[..., ControlPlane], db_url: str) -> ControlPlane:
    """Quick delivery and retries, so the tests wait tenths of seconds, not minutes."""
    return make_plane(
        db_url, webhook_allow_private=True, webhook_retry_base_ms=100, webhook_poll_seconds=0.05
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


def configure(master: ControlPlaneClient, receiver: Receiver, *types: str) -> str:
    created = master.set_webhook_endpoint(receiver.url, types)
    receiver.secret = created.secret
    return created.secret


def spend(service: ControlPlaneClient, key_id: str, micros: int) -> None:
    """Settle a request costing exactly `micros` (a multiple of 3)."""
    assert micros % 3 == 0
    service.settle(settle_request(key_id, uuid.uuid4().hex, inp=0, out=micros * 5 // 3))


def deliveries(master: ControlPlaneClient, status: int = 0) -> list[webhooks_pb2.WebhookDelivery]:
    return list(master.list_webhook_deliveries(status=status).deliveries)


def wait_until(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_signature_matches_the_standard_webhooks_reference() -> None:
    # The example of the Standard Webhooks reference libraries (standard-webhooks/standard-webhooks).
    signature = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_default_schedule_retries_for_about_three_days() -> None:
    policy = Policy()
    delays = [policy.backoff_ms(n) for n in range(1, policy.max_attempts)]
    assert delays[:3] == [5_000, 10_000, 20_000] and max(delays) == 6 * 3600 * 1000
    assert 3 * 86_400_000 <= sum(delays) <= 4 * 86_400_000


def test_crossing_50_80_100_fires_each_once(
    master: ControlPlaneClient, service: ControlPlaneClient, receiver: Receiver
) -> None:
    key, _ = master.create_key("u", cap_micros=CAP)
    configure(master, receiver)
    spend(service, key.id, 600)  # 10 %: nothing
    spend(service, key.id, 2_400)  # 50 % exactly
    spend(service, key.id, 1_800)  # 80 %
    spend(service, key.id, 600)  # 90 %
    spend(service, key.id, 3_000)  # 150 %: past the cap
    spend(service, key.id, 300)
    # Events are not ordered (a claimed batch is POSTed concurrently): sorted by threshold.
    got = sorted(receiver.wait_delivered(3), key=lambda a: int(a.event["data"]["threshold_percent"]))
    time.sleep(0.5)  # and nothing more comes
    assert len(receiver.attempts) == 3 and all(a.valid for a in receiver.attempts)
    events = [a.event for a in got]
    assert [(e["type"], e["data"]["threshold_percent"]) for e in events] == [
        ("key.threshold_crossed", 50),
        ("key.threshold_crossed", 80),
        ("key.cap_reached", 100),
    ]
    assert [e["data"]["spent_micros"] for e in events] == [3_000, 4_800, 8_400]
    assert all(e["data"]["key_id"] == key.id and e["data"]["cap_micros"] == CAP for e in events)
    assert [a.webhook_id for a in got] == [e["id"] for e in events] and len({e["id"] for e in events}) == 3
    listed = deliveries(master)
    assert [d.event_type for d in listed] == ["key.cap_reached", *["key.threshold_crossed"] * 2]
    assert all(d.status == DELIVERED and d.attempts == 1 and d.delivered_ms for d in listed)
    assert master.get_key(key.id).spent_micros == 8_700  # the money path is unchanged


def test_one_settle_jumping_past_several_thresholds_fires_them_all(
    master: ControlPlaneClient, service: ControlPlaneClient, receiver: Receiver
) -> None:
    key, _ = master.create_key("u", cap_micros=CAP)
    configure(master, receiver)
    master.set_key_thresholds(key.id, [25, 75])
    spend(service, key.id, 6_000)
    got = receiver.wait_delivered(2)
    time.sleep(0.3)
    assert sorted(a.event["data"]["threshold_percent"] for a in got) == [25, 75]
    assert len(receiver.attempts) == 2  # 100 is not among this key's thresholds


def test_a_failing_receiver_gets_the_same_event_again_until_it_answers(
    master: ControlPlaneClient, service: ControlPlaneClient, receiver: Receiver
) -> None:
    key, _ = master.create_key("u", cap_micros=CAP)
    configure(master, receiver)
    receiver.status = 500
    spend(service, key.id, 3_000)
    receiver.wait_attempts(2)
    (pending,) = deliveries(master)
    assert pending.status == PENDING and pending.attempts >= 1
    assert pending.last_error == "HTTP 500" and pending.last_status_code == 500
    assert pending.next_attempt_ms > pending.created_ms
    receiver.status = 200
    (done,) = receiver.wait_delivered(1)
    attempts = receiver.attempts
    assert len(attempts) >= 3
    assert {a.webhook_id for a in attempts} == {done.webhook_id}
    assert {a.body for a in attempts} == {done.body} and all(a.valid for a in attempts)
    (delivered,) = deliveries(master)
    assert delivered.status == DELIVERED and delivered.attempts == len(attempts)


def test_gives_up_after_max_attempts_and_says_so(
    make_plane: Callable[..., ControlPlane], db_url: str, receiver: Receiver
) -> None:
    plane = make_plane(
        db_url,
        webhook_allow_private=True,
        webhook_retry_base_ms=20,
        webhook_poll_seconds=0.02,
        webhook_max_attempts=3,
    )
    master, service = _clients(plane)
    key, _ = master.create_key("u", cap_micros=CAP)
    configure(master, receiver)
    receiver.status = 503
    spend(service, key.id, 3_000)
    wait_until(lambda: bool(deliveries(master, DEAD)))
    time.sleep(0.3)
    assert len(receiver.attempts) == 3
    (dead,) = deliveries(master, DEAD)
    assert (dead.attempts, dead.last_error, dead.last_status_code) == (3, "HTTP 503", 503)
    assert deliveries(master, PENDING) == []


def test_a_dead_event_sent_again_by_hand_is_delivered_with_its_id_and_body(
    make_plane: Callable[..., ControlPlane], db_url: str, receiver: Receiver
) -> None:
    plane = make_plane(
        db_url,
        webhook_allow_private=True,
        webhook_retry_base_ms=20,
        webhook_poll_seconds=0.02,
        webhook_max_attempts=2,
    )
    master, service = _clients(plane)
    other, _ = _clients(plane)
    key, _ = master.create_key("u", cap_micros=CAP)
    configure(master, receiver)
    receiver.status = 503  # the app's endpoint was down
    spend(service, key.id, 3_000)
    wait_until(lambda: bool(deliveries(master, DEAD)))
    (dead,) = deliveries(master, DEAD)
    with pytest.raises(SpendgateRpcError) as theirs:
        other.retry_webhook_delivery(dead.event_id)  # another account's event
    assert theirs.value.code == grpc.StatusCode.NOT_FOUND
    receiver.status = 200  # back up
    again = master.retry_webhook_delivery(dead.event_id)
    assert (again.status, again.attempts, again.event_id) == (PENDING, 0, dead.event_id)
    (attempt,) = receiver.wait_delivered(1)
    assert attempt.webhook_id == dead.event_id and attempt.body == dead.body.encode() and attempt.valid
    wait_until(lambda: bool(deliveries(master, DELIVERED)))
    assert len(receiver.attempts) == 3  # two failed, then the one sent by hand
    with pytest.raises(SpendgateRpcError) as unknown:
        master.retry_webhook_delivery("evt_no_such_event")
    assert unknown.value.code == grpc.StatusCode.NOT_FOUND
    master.delete_webhook_endpoint()
    with pytest.raises(SpendgateRpcError) as nowhere:
        master.retry_webhook_delivery(dead.event_id)  # nowhere to send it
    assert nowhere.value.code == grpc.StatusCode.NOT_FOUND and "endpoint" in nowhere.value.details


def _clients(plane: ControlPlane, credit: int = 100_000_000) -> tuple[ControlPlaneClient, ControlPlaneClient]:
    with ControlPlaneClient(plane.address, plane.tokens.admin) as admin:
        created = admin.create_account("acme", credit)
    master = ControlPlaneClient(plane.address, created.master_key_secret)
    master.account_id = created.account.id  # type: ignore[attr-defined]
    master.secret = created.master_key_secret  # type: ignore[attr-defined]
    return master, ControlPlaneClient(plane.address, plane.tokens.service)


def test_a_restart_mid_retry_still_delivers(
    make_plane: Callable[..., ControlPlane], db_url: str, clock: FakeClock, receiver: Receiver
) -> None:
    """The first control plane fails once and stops; the retry belongs to the database, and a
    new process (other tokens, same database) sends the same event when it is due."""
    first = make_plane(
        db_url, webhook_allow_private=True, webhook_retry_base_ms=60_000, webhook_poll_seconds=0.05
    )
    master, service = _clients(first)
    key, _ = master.create_key("u", cap_micros=CAP)
    configure(master, receiver)
    receiver.status = 500
    spend(service, key.id, 3_000)
    receiver.wait_attempts(1)
    wait_until(lambda: deliveries(master)[0].attempts == 1)
    master.close()
    service.close()
    first.stop(grace=0)
    receiver.status = 200

    second = make_plane(
        db_url, webhook_allow_private=True, webhook_retry_base_ms=60_000, webhook_poll_seconds=0.05
    )
    time.sleep(0.3)
    assert len(receiver.attempts) == 1  # not due yet
    clock.advance(60_000)
    (done,) = receiver.wait_delivered(1)
    assert done.webhook_id == receiver.attempts[0].webhook_id and done.valid
    with ControlPlaneClient(second.address, master.secret) as again:  # type: ignore[attr-defined]
        (row,) = deliveries(again)
    assert (row.status, row.attempts, row.event_id) == (DELIVERED, 2, done.webhook_id)


def test_two_control_planes_never_deliver_one_event_twice(
    make_plane: Callable[..., ControlPlane], db_url: str, receiver: Receiver
) -> None:
    """Both planes settle for the same keys at once and both deliver: every threshold of every
    key is one event, delivered once, and never by both planes at the same moment."""
    planes = [
        make_plane(db_url, webhook_allow_private=True, webhook_retry_base_ms=50, webhook_poll_seconds=0.01)
        for _ in range(2)
    ]
    master, _ = _clients(planes[0])
    services = [ControlPlaneClient(p.address, p.tokens.service) for p in planes]
    keys = [master.create_key(f"u{i}", cap_micros=CAP)[0] for i in range(4)]
    configure(master, receiver)
    receiver.delay = 0.05  # each POST takes a while: a second deliverer would overlap it
    receiver.fail_first = 3  # and a few retries

    def hit(i: int) -> None:
        spend(services[i % 2], keys[i % len(keys)].id, 300)  # 5 % each; 24 × 5 % per key

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(hit, range(24 * len(keys))))
    got = receiver.wait_delivered(3 * len(keys), timeout=30)
    time.sleep(0.5)
    ids = [a.webhook_id for a in got]
    assert len(ids) == 3 * len(keys) and len(set(ids)) == len(ids)
    for webhook_id in set(ids):
        mine = sorted((a for a in receiver.attempts if a.webhook_id == webhook_id), key=lambda a: a.started)
        assert all(a.ended <= b.started for a, b in zip(mine, mine[1:], strict=False)), "overlapping"
    percents = sorted((a.event["data"]["key_id"], a.event["data"]["threshold_percent"]) for a in got)
    assert percents == sorted((k.id, p) for k in keys for p in (50, 80, 100))
    for client in (master, *services):
        client.close()


def test_a_daily_cap_resets_and_its_thresholds_rearm(
    master: ControlPlaneClient, service: ControlPlaneClient, receiver: Receiver, clock: FakeClock
) -> None:
    key, _ = master.create_key("u", cap_micros=CAP, cap_period="daily")
    configure(master, receiver)
    spend(service, key.id, 3_000)
    (today,) = receiver.wait_delivered(1)
    clock.advance(key.period_reset_ms - clock() + 1_000)  # a second into the next UTC day
    spend(service, key.id, 600)  # the new day's first settlement
    spend(service, key.id, 2_400)
    got = receiver.wait_delivered(3)
    time.sleep(0.3)
    assert len(receiver.attempts) == 3
    later = {a.event["type"]: a.event for a in got[1:]}  # not ordered
    reset, again = later["key.period_reset"], later["key.threshold_crossed"]
    assert reset["type"] == "key.period_reset"
    assert reset["data"]["period_start_ms"] == key.period_reset_ms
    assert reset["data"]["period_reset_ms"] == key.period_reset_ms + 86_400_000
    assert again["data"]["threshold_percent"] == 50 and again["data"]["spent_micros"] == 3_000
    assert again["id"] != today.event["id"]


def test_wallet_low_fires_once_per_credit_level(
    new_account: Callable[..., ControlPlaneClient],
    service: ControlPlaneClient,
    admin: ControlPlaneClient,
    receiver: Receiver,
) -> None:
    poor = new_account("poor", credit_micros=10_000)
    key, _ = poor.create_key("u")
    configure(poor, receiver, "wallet.low")
    assert poor.set_wallet_threshold(5_000) == 5_000
    spend(service, key.id, 3_000)  # charged 3_210 with the 7 % fee: balance 6_790
    spend(service, key.id, 3_000)  # 3_580: low
    spend(service, key.id, 300)
    (low,) = receiver.wait_delivered(1)
    assert low.event["type"] == "wallet.low"
    assert (
        low.event["data"]["balance_micros"] == 10_000 - 2 * 3_210 and low.event["data"]["low_micros"] == 5_000
    )
    admin.credit_wallet(poor.account_id, 10_000)  # type: ignore[attr-defined]
    spend(service, key.id, 9_000)  # the top-up re-armed it
    got = receiver.wait_delivered(2)
    time.sleep(0.3)
    assert len(receiver.attempts) == 2 and got[1].event["id"] != low.event["id"]
    assert poor.get_webhook_endpoint().wallet_low_micros == 5_000


def test_only_subscribed_types_and_only_with_an_endpoint(
    master: ControlPlaneClient, service: ControlPlaneClient, receiver: Receiver
) -> None:
    key, _ = master.create_key("u", cap_micros=CAP)
    spend(service, key.id, 3_000)  # no endpoint yet: nothing is recorded
    assert deliveries(master) == []
    configure(master, receiver, "key.cap_reached")
    spend(service, key.id, 3_000)
    (only,) = receiver.wait_delivered(1)
    time.sleep(0.3)
    assert only.event["type"] == "key.cap_reached" and len(receiver.attempts) == 1
    assert [d.event_type for d in deliveries(master)] == ["key.cap_reached"]


def test_the_secret_is_shown_once_and_can_be_rotated(
    master: ControlPlaneClient, service: ControlPlaneClient, receiver: Receiver
) -> None:
    first = configure(master, receiver)
    assert first.startswith("whsec_") and master.get_webhook_endpoint().secret_prefix == first[:10]
    changed = master.set_webhook_endpoint(receiver.url, ["key.threshold_crossed"])
    assert changed.secret == "" and list(changed.endpoint.event_types) == ["key.threshold_crossed"]
    rotated = master.set_webhook_endpoint(receiver.url, rotate_secret=True)
    assert rotated.secret.startswith("whsec_") and rotated.secret != first
    receiver.secret = rotated.secret
    key, _ = master.create_key("u", cap_micros=CAP)
    spend(service, key.id, 3_000)
    (got,) = receiver.wait_delivered(1)
    assert got.valid
    assert not verify(first, got.webhook_id, got.timestamp, got.body, got.signature)


def test_deleting_the_endpoint_gives_up_its_pending_deliveries(
    master: ControlPlaneClient, service: ControlPlaneClient, receiver: Receiver
) -> None:
    key, _ = master.create_key("u", cap_micros=CAP)
    configure(master, receiver)
    receiver.status = 500
    spend(service, key.id, 3_000)
    receiver.wait_attempts(1)
    assert master.delete_webhook_endpoint() == 1
    (dead,) = deliveries(master, DEAD)
    assert dead.last_error == "endpoint deleted"
    with pytest.raises(SpendgateRpcError) as info:
        master.get_webhook_endpoint()
    assert info.value.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "url",
    ["", "ftp://example.com/hook", "http://", "not a url", "http://u:p@example.com/", "http://x:99999/"],
)
def test_a_bad_url_is_invalid_argument(master: ControlPlaneClient, url: str) -> None:
    with pytest.raises(SpendgateRpcError) as info:
        master.set_webhook_endpoint(url)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and info.value.details.startswith("url:")


def test_bad_thresholds_types_and_keys_are_refused(
    plane: ControlPlane, master: ControlPlaneClient, new_account: Callable[..., ControlPlaneClient]
) -> None:
    key, secret = master.create_key("u", cap_micros=CAP)
    assert master.get_key_thresholds(key.id) == [50, 80, 100]
    for bad in ([0], [101], [50, -1]):
        with pytest.raises(SpendgateRpcError) as info:
            master.set_key_thresholds(key.id, bad)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details.startswith("percents:")
    assert master.set_key_thresholds(key.id, [90, 10, 90]) == [10, 90]
    assert master.get_key_thresholds(key.id) == [10, 90]
    with pytest.raises(SpendgateRpcError) as info:
        master.set_webhook_endpoint("https://example.com/h", ["key.exploded"])
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details.startswith("event_types:")
    with pytest.raises(SpendgateRpcError) as info:
        master.set_wallet_threshold(-1)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    other = new_account("other")
    with pytest.raises(SpendgateRpcError) as info:
        other.set_key_thresholds(key.id, [50])
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(SpendgateRpcError) as info:
        other.get_key_thresholds(key.id)
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert master.get_key_thresholds(key.id) == [10, 90]  # untouched
    with pytest.raises(SpendgateRpcError) as info:
        other.get_webhook_endpoint()
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    with ControlPlaneClient(plane.address, secret) as standard:
        with pytest.raises(SpendgateRpcError) as info:
            standard.set_webhook_endpoint("https://example.com/h")
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_bodies_are_standard_webhooks_shaped(
    master: ControlPlaneClient, service: ControlPlaneClient, receiver: Receiver
) -> None:
    key, _ = master.create_key("u", cap_micros=CAP)
    configure(master, receiver)
    spend(service, key.id, 3_000)
    (got,) = receiver.wait_delivered(1)
    body = json.loads(got.body)
    assert set(body) == {"id", "type", "timestamp", "data"} and body["timestamp"].endswith("Z")
    assert got.webhook_id == body["id"] and body["id"].startswith("evt_")
    assert abs(int(got.timestamp) - time.time()) < 60


def test_a_wallet_already_below_its_amount_fires_nothing(
    new_account: Callable[..., ControlPlaneClient], service: ControlPlaneClient, receiver: Receiver
) -> None:
    """wallet.low is a crossing: an amount set above the balance waits for the next top-up."""
    poor = new_account("poor", credit_micros=10_000)
    key, _ = poor.create_key("u")
    configure(poor, receiver, "wallet.low")
    spend(service, key.id, 6_000)  # balance 3_580
    poor.set_wallet_threshold(5_000)
    spend(service, key.id, 300)
    time.sleep(0.5)
    assert receiver.attempts == [] and deliveries(poor) == []


def test_the_outbox_refuses_a_second_row_for_one_event(plane: ControlPlane) -> None:
    """The unique constraint is the last word on "once", whatever code path inserts."""
    alert = alerts.Alert(alerts.event_id("key_x", "threshold", 0, 100, 50), "acct_x", alerts.CAP_REACHED, ())
    with plane.engine.begin() as conn:
        assert alerts.insert(conn, [alert, alert], 1) == 1
        assert alerts.insert(conn, [alert], 2) == 0
    row: dict[str, object] = {
        "event_id": alert.event_id,
        "account_id": "acct_x",
        "event_type": "x",
        "body": "{}",
    }
    row |= {"created_ms": 1, "status": "pending", "attempts": 0, "next_attempt_ms": 0}
    row |= {"lease_until_ms": 0, "lease_token": "", "last_error": "", "last_status_code": 0}
    with pytest.raises(IntegrityError), plane.engine.begin() as conn:
        conn.execute(webhook_outbox.insert().values(**row))

"""Key lifecycle over real gRPC, on SQLite and PostgreSQL: expiry (with the frozen-clock
fixture moved past it), rotation with a grace period, metadata edits and their checks,
usage rolled up by a metadata tag, and keys from before migration 0006."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import grpc
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from clients.client import ControlPlaneClient, SpendgateRpcError
from controlplane.keystore import KeyStore
from controlplane.server import ControlPlane
from controlplane.store import db
from spendgate.v1 import keys_pb2, usage_pb2
from tests.conftest import FakeClock
from tests.controlplane.test_usage_rpc import settle_request

MINUTE = 60_000


def rpc_error(fn: Callable[[], object]) -> SpendgateRpcError:
    with pytest.raises(SpendgateRpcError) as info:
        fn()
    return info.value


def own_key(plane: ControlPlane, secret: str) -> usage_pb2.GetOwnKeyResponse:
    """GetOwnKey authenticated by `secret`, as the key holder calls it."""
    with ControlPlaneClient(plane.address, secret) as client:
        try:
            return client.usage.GetOwnKey(
                usage_pb2.GetOwnKeyRequest(), metadata=(("authorization", f"Bearer {secret}"),)
            )
        except grpc.RpcError as exc:
            raise SpendgateRpcError(exc.code(), exc.details() or "") from None


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


# expiry -------------------------------------------------------------------


def test_a_key_is_refused_from_its_expiry_on_and_an_extension_revives_it(
    plane: ControlPlane, master: ControlPlaneClient, service: ControlPlaneClient, clock: FakeClock
) -> None:
    expires = clock() + MINUTE
    key, secret = master.create_key("trial", cap_micros=1_000_000, expires_ms=expires)
    assert key.expires_ms == expires and not key.expired
    assert service.reserve(key.id, "before", 1000).granted
    assert own_key(plane, secret).key.expires_ms == expires

    clock.offset_ms += expires - clock()  # exactly the instant of expiry
    refused = service.reserve(key.id, "at-expiry", 1000)
    assert not refused.granted and refused.reason == usage_pb2.REFUSAL_REASON_KEY_EXPIRED
    assert not service.grant(key.id, "g", 1000, 1).granted
    got = master.get_key(key.id)
    assert got.expired and got.expires_ms == expires
    assert [k.expired for k in master.list_keys().keys if k.id == key.id] == [True]
    # The holder may still read its own state (when it expired, what it spent): nothing more.
    assert own_key(plane, secret).key.expired
    assert service.settle(settle_request(key.id, "before")).event.cost_micros > 0  # admitted before: billed

    later = clock() + MINUTE
    assert master.update_key(key.id, expires_ms=later).expires_ms == later
    assert service.reserve(key.id, "extended", 1000).granted
    forever = master.update_key(key.id, remove_expiry=True)
    assert not forever.HasField("expires_ms") and not forever.expired


def test_an_expired_master_key_manages_nothing(
    plane: ControlPlane, master: ControlPlaneClient, clock: FakeClock
) -> None:
    _, secret = master.create_key("ops", scope="master", expires_ms=clock() + MINUTE)
    with ControlPlaneClient(plane.address, secret) as ops:
        assert ops.create_key("made-by-ops")[0].id
        clock.offset_ms += MINUTE
        error = rpc_error(lambda: ops.create_key("too-late"))
    assert error.code == grpc.StatusCode.UNAUTHENTICATED and "expired at" in error.details


def test_bad_expiries_are_refused_and_change_nothing(master: ControlPlaneClient, clock: FakeClock) -> None:
    past = rpc_error(lambda: master.create_key("late", expires_ms=clock() - 1))
    assert past.code == grpc.StatusCode.INVALID_ARGUMENT and past.details.startswith("expires_ms:")
    assert "in the future" in past.details
    key, _ = master.create_key("k", expires_ms=clock() + MINUTE)
    both = rpc_error(lambda: master.update_key(key.id, expires_ms=clock() + 2 * MINUTE, remove_expiry=True))
    assert both.code == grpc.StatusCode.INVALID_ARGUMENT and "remove_expiry" in both.details
    assert (
        rpc_error(lambda: master.update_key(key.id, expires_ms=2**62)).code
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert master.get_key(key.id).expires_ms == key.expires_ms
    assert {k.name for k in master.list_keys().keys} == {"master", "k"}  # "late" was never made


# rotation -----------------------------------------------------------------


def test_rotation_keeps_the_key_and_the_old_secret_works_until_its_grace_ends(
    plane: ControlPlane, master: ControlPlaneClient, service: ControlPlaneClient, clock: FakeClock
) -> None:
    key, old = master.create_key(
        "user_1", cap_micros=1_000_000, cap_period="daily", metadata={"user_id": "u1"}
    )
    service.reserve(key.id, "spend", 10_000)
    spent = service.settle(settle_request(key.id, "spend")).event.cost_micros
    service.reserve(key.id, "held", 2_000)

    before = clock()
    rotated, new = master.rotate_key(key.id, grace_ms=10 * MINUTE)
    assert (
        new != old
        and new.startswith("sg_live_")
        and rotated.secret_prefix == new[: len(rotated.secret_prefix)]
    )
    assert (rotated.id, rotated.cap_micros, rotated.cap_period) == (
        key.id,
        1_000_000,
        keys_pb2.CAP_PERIOD_DAILY,
    )
    assert (rotated.spent_micros, rotated.reserved_micros, dict(rotated.metadata)) == (
        spent,
        2_000,
        {"user_id": "u1"},
    )
    assert before <= rotated.rotated_ms <= clock()
    grace_ends = rotated.previous_secret_expires_ms
    assert grace_ends == rotated.rotated_ms + 10 * MINUTE
    assert new not in str(master.get_key(key.id)) and new not in str(master.list_keys())

    looked_old = service.lookup_key(digest(old))
    assert looked_old.id == key.id
    reply = service.keys.LookupKey(
        keys_pb2.LookupKeyRequest(secret_sha256=digest(old)),
        metadata=(("authorization", f"Bearer {plane.tokens.service}"),),
    )
    assert reply.secret_expires_ms == grace_ends
    current = service.keys.LookupKey(
        keys_pb2.LookupKeyRequest(secret_sha256=digest(new)),
        metadata=(("authorization", f"Bearer {plane.tokens.service}"),),
    )
    assert current.key.id == key.id and not current.HasField("secret_expires_ms")
    assert own_key(plane, old).key.id == own_key(plane, new).key.id == key.id

    clock.offset_ms += grace_ends - clock()  # the grace is over: the old secret is refused, the new one works
    error = rpc_error(lambda: own_key(plane, old))
    assert error.code == grpc.StatusCode.UNAUTHENTICATED and "rotation" in error.details
    assert own_key(plane, new).key.spent_micros == spent
    assert master.get_key(key.id).previous_secret_expires_ms == 0


def test_a_second_rotation_ends_the_oldest_secret_and_grace_zero_ends_the_old_one_at_once(
    plane: ControlPlane, master: ControlPlaneClient
) -> None:
    key, first = master.create_key("u")
    _, second = master.rotate_key(key.id)  # default grace: 24 h
    assert (
        master.get_key(key.id).previous_secret_expires_ms - master.get_key(key.id).rotated_ms
        == 24 * 60 * MINUTE
    )
    _, third = master.rotate_key(key.id)
    assert rpc_error(lambda: own_key(plane, first)).code == grpc.StatusCode.UNAUTHENTICATED
    assert own_key(plane, second).key.id == own_key(plane, third).key.id == key.id
    _, fourth = master.rotate_key(key.id, grace_ms=0)
    for gone in (first, second, third):
        assert rpc_error(lambda s=gone: own_key(plane, s)).code == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[misc]
    assert own_key(plane, fourth).key.id == key.id
    assert master.get_key(key.id).previous_secret_expires_ms == 0


def test_rotation_is_refused_for_a_bad_grace_a_revoked_or_expired_key(
    master: ControlPlaneClient, clock: FakeClock
) -> None:
    key, _ = master.create_key("u", expires_ms=clock() + MINUTE)
    prefix = master.get_key(key.id).secret_prefix
    for grace in (-1, 30 * 24 * 60 * MINUTE + 1):
        error = rpc_error(lambda g=grace: master.rotate_key(key.id, grace_ms=g))  # type: ignore[misc]
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.details.startswith("grace_ms:")
    assert master.get_key(key.id).secret_prefix == prefix and master.get_key(key.id).rotated_ms == 0
    clock.offset_ms += MINUTE
    assert "expired" in rpc_error(lambda: master.rotate_key(key.id)).details
    master.revoke_key(key.id)
    assert "revoked" in rpc_error(lambda: master.rotate_key(key.id)).details
    missing = rpc_error(lambda: master.rotate_key("key_nope"))
    assert missing.code == grpc.StatusCode.NOT_FOUND


def test_watch_keys_sends_a_rotation_with_the_secret_it_replaced(
    master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    key, old = master.create_key("u")
    stream = service.watch_keys()
    try:
        assert next(stream).kind == keys_pb2.KEY_CHANGE_KIND_SYNC
        _, new = master.rotate_key(key.id, grace_ms=MINUTE)
        change = next(stream)
    finally:
        stream.cancel()
    assert change.kind == keys_pb2.KEY_CHANGE_KIND_ROTATED and change.key.id == key.id
    assert change.secret_sha256 == digest(new) and change.previous_secret_sha256 == digest(old)
    rotated = master.get_key(key.id)
    assert (
        change.previous_secret_expires_ms == rotated.rotated_ms + MINUTE == rotated.previous_secret_expires_ms
    )


# metadata -----------------------------------------------------------------


def test_metadata_is_replaced_by_update_and_bad_metadata_is_refused_whole(master: ControlPlaneClient) -> None:
    key, _ = master.create_key("u", metadata={"user_id": "u1", "plan": "trial"})
    assert dict(master.update_key(key.id, metadata={"user_id": "u1", "plan": "pro"}).metadata) == {
        "user_id": "u1",
        "plan": "pro",
    }
    bad = [
        ({f"k{i}": "v" for i in range(65)}, "at most 64 entries"),
        ({"user id": "x"}, "'user id'"),
        ({"": "x"}, "key ''"),
        ({"k" * 65: "x"}, "1 to 64 characters"),
        ({"note": "x" * 513}, "at most 512 characters"),
    ]
    for metadata, fragment in bad:
        error = rpc_error(lambda m=metadata: master.update_key(key.id, name="renamed", metadata=m))  # type: ignore[misc]
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, metadata
        assert error.details.startswith("metadata:") and fragment in error.details, error.details
        error = rpc_error(lambda m=metadata: master.create_key("new", metadata=m))  # type: ignore[misc]
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    unchanged = master.get_key(key.id)
    assert unchanged.name == "u" and dict(unchanged.metadata) == {"user_id": "u1", "plan": "pro"}
    assert dict(master.update_key(key.id, name="kept").metadata) == {"user_id": "u1", "plan": "pro"}
    assert dict(master.update_key(key.id, metadata={}).metadata) == {}


def test_usage_rolls_up_by_a_metadata_tag(
    master: ControlPlaneClient, service: ControlPlaneClient, clock: FakeClock
) -> None:
    a, _ = master.create_key("a", metadata={"user_id": "alice", "plan": "pro"})
    b, _ = master.create_key("b", metadata={"user_id": "alice"})
    c, _ = master.create_key("c", metadata={"user_id": "bob"})
    d, _ = master.create_key("d")
    start = clock()
    for key, n, inp in ((a, 2, 1000), (b, 1, 40_000), (c, 3, 500), (d, 1, 7)):
        for i in range(n):
            service.settle(settle_request(key.id, f"{key.id}-{i}", inp=inp, out=100, started_ms=clock()))
    usage = master.get_usage(start, clock() + 1, group_by="metadata.user_id")
    by_key = {k.key_id: k for k in usage.by_key}
    assert dict(by_key[a.id].metadata) == {"user_id": "alice", "plan": "pro"} and not by_key[d.id].metadata
    assert usage.group_by == "metadata.user_id"
    groups = [(g.value if g.HasField("value") else None, sorted(g.key_ids)) for g in usage.groups]
    assert groups == [("alice", sorted([a.id, b.id])), ("bob", [c.id]), (None, [d.id])]
    for group in usage.groups:
        members = [by_key[k] for k in group.key_ids]
        assert group.cost_micros == sum(k.cost_micros for k in members) > 0
        assert group.fee_micros == sum(k.fee_micros for k in members)
        assert group.requests == sum(k.requests for k in members)
        assert group.input_tokens == sum(k.input_tokens for k in members)
    assert [g.requests for g in usage.groups] == [3, 3, 1]
    assert sum(g.cost_micros for g in usage.groups) == sum(k.cost_micros for k in usage.by_key)
    # Tags as they are now: moving b to bob moves its usage with it.
    master.update_key(b.id, metadata={"user_id": "bob"})
    regrouped = master.get_usage(start, clock() + 1, group_by="metadata.user_id").groups
    assert {g.value: g.requests for g in regrouped if g.HasField("value")} == {"alice": 2, "bob": 4}
    assert not master.get_usage(start, clock() + 1).groups  # no group_by: no groups
    for bad in ("user_id", "metadata.", "metadata.user id", "model"):
        error = rpc_error(lambda g=bad: master.get_usage(start, clock() + 1, group_by=g))  # type: ignore[misc]
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.details.startswith("group_by:")


def test_keys_made_before_migration_0006_upgrade_without_an_expiry_and_rotate(db_url: str) -> None:
    engine = db.make_engine(db_url)
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0005")
    old = "sg_live_" + "o" * 43
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO accounts (id, name, created_ms, credit_micros, spent_micros, reserved_micros) "
                "VALUES ('acct_old', 'old', 1, 100, 0, 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO keys (id, account_id, name, scope, secret_sha256, secret_prefix, cap_micros, "
                "cap_period, strict, allowed_models, metadata, created_ms, revoked_ms, spent_micros, "
                "reserved_micros, period_start_ms) VALUES ('key_old', 'acct_old', 'kept', 'standard', :digest, "
                "'sg_live_oooo', 50, 'lifetime', false, '[]', '{\"user_id\": \"7\"}', 1, NULL, 20, 0, 0)"
            ),
            {"digest": digest(old)},
        )
    db.migrate(engine)
    store = KeyStore(engine, FakeClock())
    found = store.find(digest(old))
    assert found is not None and found.secret_expires_ms is None and found.refusal(store.now()) is None
    assert (found.key.expires_ms, found.key.rotated_ms, found.key.spent_micros) == (None, None, 20)
    rotated, new = store.rotate_key("acct_old", "key_old", grace_ms=MINUTE)
    assert (rotated.id, rotated.spent_micros, dict(rotated.metadata)) == ("key_old", 20, {"user_id": "7"})
    kept_old, found_new = store.find(digest(old)), store.find(digest(new))
    assert kept_old is not None and kept_old.secret_expires_ms == rotated.old_secret_expires_ms
    assert found_new is not None and found_new.key.id == "key_old" and found_new.secret_expires_ms is None
    engine.dispose()

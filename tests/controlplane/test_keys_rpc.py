"""KeyService over real gRPC: every RPC, its errors, and the tenant boundary."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

import grpc
import pytest

from clients.client import ControlPlaneClient, SpendgateRpcError
from controlplane.server import ControlPlane
from spendgate.v1 import keys_pb2, keys_pb2_grpc


def rpc_error(fn: Callable[[], object]) -> SpendgateRpcError:
    with pytest.raises(SpendgateRpcError) as info:
        fn()
    return info.value


def test_create_key_returns_secret_once_and_stores_only_its_hash(
    master: ControlPlaneClient, plane: ControlPlane
) -> None:
    key, secret = master.create_key("user_1", cap_micros=5_000_000, metadata={"user": "1"})
    assert secret.startswith("sg_live_") and len(secret) >= len("sg_live_") + 43  # 256 bits, base64url
    assert key.cap_micros == 5_000_000 and key.remaining_micros == 5_000_000
    assert key.scope == keys_pb2.KEY_SCOPE_STANDARD and dict(key.metadata) == {"user": "1"}
    assert key.secret_prefix == secret[: len(key.secret_prefix)] and len(key.secret_prefix) < 16
    again = master.get_key(key.id)
    assert secret not in str(again) and secret not in str(master.list_keys())
    with plane.engine.connect() as conn:
        dump = "\n".join(str(row) for row in conn.exec_driver_sql("SELECT * FROM keys"))
    assert secret not in dump
    stored = plane.keystore.lookup(hashlib.sha256(secret.encode()).digest())
    assert stored is not None and stored.id == key.id


def test_two_mints_give_different_secrets(master: ControlPlaneClient) -> None:
    secrets = {master.create_key(f"u{i}")[1] for i in range(20)}
    assert len(secrets) == 20


def test_get_key_reports_spent_reserved_remaining(
    master: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    key, _ = master.create_key("u", cap_micros=1_000_000)
    service.reserve(key.id, "r1", 300_000)
    got = master.get_key(key.id)
    assert (got.spent_micros, got.reserved_micros, got.remaining_micros) == (0, 300_000, 700_000)


def test_list_keys_pages_through_every_key_once(master: ControlPlaneClient) -> None:
    minted = [master.create_key(f"user_{i}")[0].id for i in range(7)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = master.list_keys(page_size=3, page_token=token)
        seen += [k.id for k in page.keys]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    master_key_count = 1
    assert pages == 3 and len(seen) == 7 + master_key_count
    assert seen[master_key_count:] == minted


def test_list_keys_hides_revoked_unless_asked(master: ControlPlaneClient) -> None:
    key, _ = master.create_key("gone")
    master.revoke_key(key.id)
    assert key.id not in [k.id for k in master.iter_keys()]
    assert key.id in [k.id for k in master.iter_keys(include_revoked=True)]


def test_update_key_changes_only_what_is_set(master: ControlPlaneClient) -> None:
    key, _ = master.create_key("u", cap_micros=1_000_000, allowed_models=["gpt-4o-mini"])
    raised = master.update_key(key.id, cap_micros=2_000_000)
    assert (
        raised.cap_micros == 2_000_000
        and raised.name == "u"
        and list(raised.allowed_models) == ["gpt-4o-mini"]
    )
    renamed = master.update_key(key.id, name="renamed", allowed_models=[])
    assert (
        renamed.name == "renamed" and list(renamed.allowed_models) == [] and renamed.cap_micros == 2_000_000
    )
    uncapped = master.update_key(key.id, remove_cap=True, strict=True)
    assert (
        not uncapped.HasField("cap_micros") and not uncapped.HasField("remaining_micros") and uncapped.strict
    )


def test_revoked_key_cannot_authenticate_or_be_updated(
    master: ControlPlaneClient, plane: ControlPlane
) -> None:
    sub, secret = master.create_key("sub-master", scope="master")
    with ControlPlaneClient(plane.address, secret) as sub_client:
        assert sub_client.get_key(sub.id).id == sub.id
        revoked = master.revoke_key(sub.id)
        assert revoked.revoked and revoked.revoked_ms > 0
        assert rpc_error(lambda: sub_client.get_key(sub.id)).code == grpc.StatusCode.UNAUTHENTICATED
    err = rpc_error(lambda: master.update_key(sub.id, name="x"))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "key_id" in err.details
    assert master.revoke_key(sub.id).revoked  # idempotent


def test_another_accounts_key_is_not_found(new_account: Callable[..., ControlPlaneClient]) -> None:
    alice, bob = new_account("alice"), new_account("bob")
    bobs_key, _ = bob.create_key("bob_user")
    for call in (
        lambda: alice.get_key(bobs_key.id),
        lambda: alice.update_key(bobs_key.id, cap_micros=1),
        lambda: alice.revoke_key(bobs_key.id),
        lambda: alice.list_usage_events(bobs_key.id),
    ):
        err = rpc_error(call)
        assert err.code == grpc.StatusCode.NOT_FOUND
        assert (
            rpc_error(lambda: alice.get_key("key_doesnotexist")).details.replace(
                "key_doesnotexist", bobs_key.id
            )
            == err.details
        )
    assert bobs_key.id not in [k.id for k in alice.iter_keys(include_revoked=True)]
    assert not bob.get_key(bobs_key.id).revoked


@pytest.mark.parametrize("token", [None, "", "Bearer nope", "Basic abc"])
def test_missing_or_wrong_credentials_are_unauthenticated(plane: ControlPlane, token: str | None) -> None:
    channel = grpc.insecure_channel(plane.address)
    stub = keys_pb2_grpc_stub(channel)
    metadata = () if token is None else (("authorization", token),)
    with pytest.raises(grpc.RpcError) as info:
        stub.ListKeys(keys_pb2.ListKeysRequest(), metadata=metadata)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    channel.close()


def keys_pb2_grpc_stub(channel: grpc.Channel) -> keys_pb2_grpc.KeyServiceStub:
    return keys_pb2_grpc.KeyServiceStub(channel)


def test_roles_are_enforced(
    master: ControlPlaneClient, plane: ControlPlane, admin: ControlPlaneClient, service: ControlPlaneClient
) -> None:
    _, standard_secret = master.create_key("std")
    with ControlPlaneClient(plane.address, standard_secret) as standard:
        assert rpc_error(lambda: standard.create_key("x")).code == grpc.StatusCode.PERMISSION_DENIED
        assert rpc_error(lambda: standard.get_usage(0, 1)).code == grpc.StatusCode.PERMISSION_DENIED
        assert rpc_error(lambda: standard.create_account("x")).code == grpc.StatusCode.PERMISSION_DENIED
        assert len(standard.list_prices().prices) > 0  # any credential may read prices
    assert rpc_error(lambda: master.create_account("x")).code == grpc.StatusCode.PERMISSION_DENIED
    assert rpc_error(lambda: master.reserve("k", "r", 1)).code == grpc.StatusCode.PERMISSION_DENIED
    assert rpc_error(lambda: master.lookup_key(b"0" * 32)).code == grpc.StatusCode.PERMISSION_DENIED
    assert rpc_error(lambda: service.create_key("x")).code == grpc.StatusCode.PERMISSION_DENIED
    assert rpc_error(lambda: service.create_account("x")).code == grpc.StatusCode.PERMISSION_DENIED
    assert rpc_error(lambda: admin.create_key("x")).code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda m: m.create_key(""), "name"),
        (lambda m: m.create_key("x" * 201), "name"),
        (lambda m: m.create_key("x", cap_micros=-1), "cap_micros"),
        (lambda m: m.create_key("x", allowed_models=[" "]), "allowed_models"),
        (lambda m: m.list_keys(page_size=-1), "page_size"),
        (lambda m: m.list_keys(page_token="!!garbage"), "page_token"),
        (lambda m: m.update_key(m.create_key("y")[0].id, cap_micros=5, remove_cap=True), "remove_cap"),
        (lambda m: m.get_usage(10, 5), "to_ms"),
        (lambda m: m.get_usage(-1, 5), "from_ms"),
    ],
)
def test_bad_arguments_name_the_field(
    master: ControlPlaneClient, call: Callable[..., object], field: str
) -> None:
    err = rpc_error(lambda: call(master))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details.startswith(field + ":"), err.details


def test_unknown_enum_value_is_invalid_argument(master: ControlPlaneClient) -> None:
    request = keys_pb2.CreateKeyRequest(name="x", scope=7)  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as info:
        master.keys.CreateKey(request, metadata=master._metadata)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "scope" in (info.value.details() or "")


def test_lookup_key_by_secret_digest(master: ControlPlaneClient, service: ControlPlaneClient) -> None:
    key, secret = master.create_key("u", allowed_models=["gpt-4o"])
    found = service.lookup_key(hashlib.sha256(secret.encode()).digest())
    assert found.id == key.id and list(found.allowed_models) == ["gpt-4o"]
    assert (
        rpc_error(lambda: service.lookup_key(hashlib.sha256(b"other").digest())).code
        == grpc.StatusCode.NOT_FOUND
    )
    err = rpc_error(lambda: service.lookup_key(b"short"))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.details.startswith("secret_sha256:")


def test_watch_keys_streams_changes(master: ControlPlaneClient, service: ControlPlaneClient) -> None:
    stream = service.watch_keys()
    received: list[keys_pb2.WatchKeysResponse] = []
    done = threading.Event()

    def consume() -> None:
        try:
            for change in stream:
                received.append(change)
                if change.kind == keys_pb2.KEY_CHANGE_KIND_REVOKED:
                    done.set()
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.CANCELLED

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        time.sleep(0.01)
    assert received and received[0].kind == keys_pb2.KEY_CHANGE_KIND_SYNC
    key, secret = master.create_key("watched", cap_micros=10)
    master.update_key(key.id, cap_micros=20)
    started = time.monotonic()
    master.revoke_key(key.id)
    assert done.wait(5), received
    assert time.monotonic() - started < 1.0
    stream.cancel()
    thread.join(5)
    kinds = [(c.kind, c.key.id) for c in received[1:]]
    assert kinds == [
        (keys_pb2.KEY_CHANGE_KIND_CREATED, key.id),
        (keys_pb2.KEY_CHANGE_KIND_UPDATED, key.id),
        (keys_pb2.KEY_CHANGE_KIND_REVOKED, key.id),
    ]
    assert received[2].key.cap_micros == 20 and received[3].key.revoked
    assert received[3].secret_sha256 == hashlib.sha256(secret.encode()).digest()
    seqs = [c.seq for c in received]
    assert seqs == sorted(seqs) and len(set(seqs[1:])) == 3

    # Resuming after a sequence number replays what came after it.
    resumed = service.watch_keys(after_seq=received[1].seq)
    replay = [next(resumed), next(resumed)]
    resumed.cancel()
    assert [c.kind for c in replay] == [keys_pb2.KEY_CHANGE_KIND_UPDATED, keys_pb2.KEY_CHANGE_KIND_REVOKED]

"""The tenant isolation matrix: every RPC against every kind of credential."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from clients.client import ControlPlaneClient
from controlplane.auth import METHOD_ROLES, Role
from controlplane.server import ControlPlane
from spendgate.v1 import admin_pb2, keys_pb2, keys_pb2_grpc, usage_pb2, usage_pb2_grpc, webhooks_pb2
from spendgate.v1 import admin_pb2_grpc as admin_grpc
from spendgate.v1 import webhooks_pb2_grpc as webhooks_grpc

DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def requests_for(key_id: str, account_id: str) -> dict[str, object]:
    """A well-formed request per RPC, aimed at `key_id` / `account_id` where it takes one."""
    return {
        "CreateKey": keys_pb2.CreateKeyRequest(name="probe"),
        "GetKey": keys_pb2.GetKeyRequest(key_id=key_id),
        "ListKeys": keys_pb2.ListKeysRequest(),
        "UpdateKey": keys_pb2.UpdateKeyRequest(key_id=key_id, name="hijacked"),
        "RotateKey": keys_pb2.RotateKeyRequest(key_id=key_id),
        "RevokeKey": keys_pb2.RevokeKeyRequest(key_id=key_id),
        "LookupKey": keys_pb2.LookupKeyRequest(secret_sha256=b"\0" * 32),
        "WatchKeys": keys_pb2.WatchKeysRequest(),
        "Reserve": usage_pb2.ReserveRequest(key_id=key_id, request_id="probe", amount_micros=0),
        "Settle": usage_pb2.SettleRequest(
            request_id="probe-settle", key_id=key_id, provider="none", model="none"
        ),
        "Grant": usage_pb2.GrantRequest(key_id=key_id, grant_id="probe-grant", want_micros=1, min_micros=1),
        "SettleBatch": usage_pb2.SettleBatchRequest(
            settlements=[
                usage_pb2.SettleRequest(
                    request_id="probe-batch", key_id=key_id, provider="none", model="none"
                )
            ]
        ),
        "Release": usage_pb2.ReleaseRequest(request_id="nothing-reserved"),
        "GetUsage": usage_pb2.GetUsageRequest(from_ms=0, to_ms=1),
        "ListUsageEvents": usage_pb2.ListUsageEventsRequest(key_id=key_id),
        "ListPrices": usage_pb2.ListPricesRequest(),
        "GetOwnKey": usage_pb2.GetOwnKeyRequest(),
        "CreateAccount": admin_pb2.CreateAccountRequest(name="probe"),
        "CreditWallet": admin_pb2.CreditWalletRequest(account_id=account_id, amount_micros=1),
        "ApplyCatalog": admin_pb2.ApplyCatalogRequest(),
        "UpsertPrice": admin_pb2.UpsertPriceRequest(
            price=usage_pb2.Price(
                provider="probe", model="m", input_micros_per_mtok=1, output_micros_per_mtok=1
            )
        ),
        "SetWebhookEndpoint": webhooks_pb2.SetWebhookEndpointRequest(url="https://example.invalid/hook"),
        "GetWebhookEndpoint": webhooks_pb2.GetWebhookEndpointRequest(),
        "DeleteWebhookEndpoint": webhooks_pb2.DeleteWebhookEndpointRequest(),
        "SetKeyThresholds": webhooks_pb2.SetKeyThresholdsRequest(key_id=key_id, percents=[1]),
        "GetKeyThresholds": webhooks_pb2.GetKeyThresholdsRequest(key_id=key_id),
        "SetWalletThreshold": webhooks_pb2.SetWalletThresholdRequest(low_micros=1),
        "ListWebhookDeliveries": webhooks_pb2.ListWebhookDeliveriesRequest(),
        "RetryWebhookDelivery": webhooks_pb2.RetryWebhookDeliveryRequest(event_id="evt_probe"),
    }


def call(channel: grpc.Channel, method: str, request: object, token: str | None) -> grpc.StatusCode:
    service = method.split("/")[1].rsplit(".", 1)[-1]
    name = method.rsplit("/", 1)[-1]
    stub = {
        "KeyService": keys_pb2_grpc.KeyServiceStub,
        "UsageService": usage_pb2_grpc.UsageServiceStub,
        "AdminService": admin_grpc.AdminServiceStub,
        "WebhookService": webhooks_grpc.WebhookServiceStub,
    }[service](channel)
    metadata = () if token is None else (("authorization", f"Bearer {token}"),)
    try:
        result = getattr(stub, name)(request, metadata=metadata, timeout=5)
        if name == "WatchKeys":
            next(result)  # the SYNC marker: the stream was accepted
            result.cancel()
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()


def expected_allowed(role: Role, holder: str) -> bool:
    return {
        "admin": role in (Role.ADMIN, Role.SERVICE, Role.ANY),
        "service": role in (Role.SERVICE, Role.ANY),
        "master": role in (Role.MASTER, Role.ANY, Role.KEY),
        "standard": role in (Role.ANY, Role.KEY),
        "none": False,
        "bogus": False,
        "revoked": False,
    }[holder]


def test_every_rpc_against_every_credential(
    plane: ControlPlane, new_account: Callable[..., ControlPlaneClient], service: ControlPlaneClient
) -> None:
    alice, bob = new_account("alice"), new_account("bob")
    bobs_key, _ = bob.create_key("bob_user", cap_micros=1_000)
    _, standard = alice.create_key("alice_user")
    revoked_key, revoked = alice.create_key("gone", scope="master")
    alice.revoke_key(revoked_key.id)
    alice_master = alice._metadata[0][1].removeprefix("Bearer ")
    holders = {
        "admin": plane.tokens.admin,
        "service": plane.tokens.service,
        "master": alice_master,
        "standard": standard,
        "none": None,
        "bogus": "sg_live_" + "A" * 43,
        "revoked": revoked,
    }
    every_rpc = {
        f"/{service.full_name}/{method.name}"
        for module in (keys_pb2, usage_pb2, admin_pb2, webhooks_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert every_rpc == set(METHOD_ROLES)  # no RPC left out of the role table
    assert set(requests_for("", "")) == {m.rsplit("/", 1)[-1] for m in METHOD_ROLES}
    with grpc.insecure_channel(plane.address) as channel:
        for method, role in METHOD_ROLES.items():
            request = requests_for(bobs_key.id, bob.account_id)[method.rsplit("/", 1)[-1]]  # type: ignore[attr-defined]
            for holder, token in holders.items():
                code = call(channel, method, request, token)
                if not expected_allowed(role, holder):
                    wanted = (
                        grpc.StatusCode.UNAUTHENTICATED
                        if holder in ("none", "bogus", "revoked")
                        else grpc.StatusCode.PERMISSION_DENIED
                    )
                    assert code == wanted, (method, holder, code)
                elif (
                    holder == "master"
                    and role is Role.MASTER
                    and method.rsplit("/", 1)[-1]
                    in (
                        "GetKey",
                        "UpdateKey",
                        "RevokeKey",
                        "ListUsageEvents",
                        "SetKeyThresholds",
                        "GetKeyThresholds",
                    )
                ):
                    assert code == grpc.StatusCode.NOT_FOUND, (method, holder, code)  # Bob's key: invisible
                else:
                    assert code not in DENIED, (method, holder, code)
    # Alice could neither see nor touch Bob's key.
    untouched = bob.get_key(bobs_key.id)
    assert untouched.name == "bob_user" and not untouched.revoked
    assert bobs_key.id not in [k.id for k in alice.iter_keys(include_revoked=True)]
    assert all(k.key_id != bobs_key.id for k in alice.get_usage(0, 2**62).by_key)
    assert bob.get_key_thresholds(bobs_key.id) == [50, 80, 100]


@pytest.mark.parametrize("header", ["Bearer", "bearer ", "Token x", "Basic dXNlcjpwYXNz"])
def test_malformed_authorization_is_unauthenticated(plane: ControlPlane, header: str) -> None:
    with grpc.insecure_channel(plane.address) as channel:
        stub = keys_pb2_grpc.KeyServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ListKeys(keys_pb2.ListKeysRequest(), metadata=(("authorization", header),))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

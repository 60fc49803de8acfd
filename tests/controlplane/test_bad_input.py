"""Hostile input over real gRPC (issue 15, points 8 and 9): forged page tokens,
numbers whose sums leave the 64-bit columns, and long bogus credentials. Each is
INVALID_ARGUMENT naming the field, or UNAUTHENTICATED, never UNKNOWN."""

from __future__ import annotations

import base64
from collections.abc import Callable

import grpc
import pytest

from clients.client import ControlPlaneClient, SpendgateRpcError
from controlplane.server import MAX_METADATA_BYTES, ControlPlane

INT64_MAX = 2**63 - 1


def rpc_error(fn: Callable[[], object]) -> SpendgateRpcError:
    with pytest.raises(SpendgateRpcError) as info:
        fn()
    return info.value


def token_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


FORGED = [str(10**30), str(2**63), "-5", "x" * 5000, "1" * 5000]  # the last: over 4,300 digits


def test_a_forged_page_token_is_invalid_argument(master: ControlPlaneClient) -> None:
    key, _ = master.create_key("paged")
    for token in [token_of(forged) for forged in FORGED] + ["not base64 \u00e9"]:
        for call in (
            lambda t=token: master.list_keys(page_token=t),
            lambda t=token: master.list_usage_events(key.id, page_token=t),
        ):
            error = rpc_error(call)
            assert error.code == grpc.StatusCode.INVALID_ARGUMENT, (token[:20], error)
            assert error.details.startswith("page_token:")


def test_a_token_at_the_top_of_the_range_is_an_empty_page(master: ControlPlaneClient) -> None:
    key, _ = master.create_key("paged")
    assert list(master.list_keys(page_token=token_of(str(INT64_MAX))).keys) == []
    assert list(master.list_usage_events(key.id, page_token=token_of(str(INT64_MAX))).events) == []


def test_caps_across_the_int64_range(master: ControlPlaneClient) -> None:
    key, _ = master.create_key("largest", cap_micros=INT64_MAX)
    assert key.cap_micros == INT64_MAX and key.remaining_micros == INT64_MAX
    assert master.update_key(key.id, cap_micros=INT64_MAX - 1).cap_micros == INT64_MAX - 1
    for call in (
        lambda: master.create_key("negative", cap_micros=-1),
        lambda: master.update_key(key.id, cap_micros=-(2**63)),
    ):
        error = rpc_error(call)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.details.startswith("cap_micros:")


def test_credit_that_would_overflow_the_wallet_is_invalid_argument(
    admin: ControlPlaneClient, master: ControlPlaneClient
) -> None:
    account_id = master.account_id  # type: ignore[attr-defined]
    topped = admin.credit_wallet(account_id, INT64_MAX - 100_000_000)  # the account starts with $100
    assert topped.credit_micros == INT64_MAX
    error = rpc_error(lambda: admin.credit_wallet(account_id, 1))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.details.startswith("amount_micros:")
    assert rpc_error(lambda: admin.credit_wallet("acct_missing", 1)).code == grpc.StatusCode.NOT_FOUND
    assert master.get_usage(0, INT64_MAX) is not None  # the account still reads


def test_a_long_bogus_credential_is_unauthenticated(plane: ControlPlane) -> None:
    """gRPC refuses metadata past its limits before any interceptor (RESOURCE_EXHAUSTED, at random
    between 8 and 16 KiB by default); the control plane raises the limit so that every credential
    short of it gets the answer any wrong credential gets."""
    for size in (9_000, 12_000, 20_000, MAX_METADATA_BYTES - 1_000):
        with ControlPlaneClient(plane.address, "x" * size) as client:
            for call in (client.list_keys, lambda: client.get_usage(0, 1), client.list_prices):
                error = rpc_error(call)
                assert (error.code, error.details) == (grpc.StatusCode.UNAUTHENTICATED, "invalid credentials")


def test_credentials_past_the_metadata_limit_are_refused_by_grpc_itself(plane: ControlPlane) -> None:
    with ControlPlaneClient(plane.address, "x" * (MAX_METADATA_BYTES + 1)) as client:
        assert rpc_error(client.list_keys).code == grpc.StatusCode.RESOURCE_EXHAUSTED

"""GET /v1/key: a key holder's own limit, usage and what is left (issue 13.4), OpenRouter-shaped,
authenticated by the user's own key."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, cast

import grpc
import httpx
import pytest

from spendgate.v1 import usage_pb2, usage_pb2_grpc
from tests.e2e.conftest import Account, Running
from tests.e2e.test_caps_and_errors import MESSAGES, sdk


def own_key(gateway: Running, secret: object) -> httpx.Response:
    return httpx.get(gateway.base + "/v1/key", headers={"Authorization": f"Bearer {secret}"})


def data(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    # Amounts are exact decimal numbers: read them as Decimals, never floats.
    return cast(dict[str, Any], json.loads(response.text, parse_float=Decimal)["data"])


def test_a_key_holder_sees_its_limit_usage_and_what_is_left(gateway: Running, account: Account) -> None:
    key = account.mint("self", max_spend_usd="5", cap_period="monthly")
    before = data(own_key(gateway, key["secret"]))
    assert (before["limit"], before["limit_micros"], before["usage_micros"]) == (5, 5_000_000, 0)
    assert before["limit_remaining_micros"] == 5_000_000 and before["limit_reset"] == "monthly"
    with sdk(gateway, key) as client:
        for _ in range(2):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=30)
    events = account.events(str(key["id"]), 2)
    spent = sum(cast(int, e["cost_micros"]) for e in events)
    after = data(own_key(gateway, key["secret"]))
    assert spent > 0 and after["usage_micros"] == spent
    assert after["usage"] == Decimal(spent) / 1_000_000  # the same amount, exactly
    for window in ("usage_daily_micros", "usage_weekly_micros", "usage_monthly_micros"):
        assert after[window] == spent  # all of it today
    assert after["period_usage_micros"] == spent
    assert after["limit_remaining_micros"] == 5_000_000 - spent - after["reserved_micros"]
    assert after["limit_remaining"] == Decimal(after["limit_remaining_micros"]) / 1_000_000
    assert after["id"] == key["id"] and after["label"] == "self" and after["expires_at"] is None


def test_a_key_without_a_cap_has_no_limit(gateway: Running, account: Account) -> None:
    key = account.mint("uncapped")
    body = data(own_key(gateway, key["secret"]))
    assert body["limit"] is None and body["limit_remaining"] is None and body["limit_reset"] is None


def test_the_master_key_sees_itself_and_no_key_sees_another(gateway: Running, account: Account) -> None:
    body = data(own_key(gateway, account.master_key))
    assert body["id"] != "" and body["limit"] is None
    other = account.mint("other")
    assert data(own_key(gateway, other["secret"]))["id"] == other["id"]


@pytest.mark.parametrize("secret", ["", "sg_live_" + "x" * 43, "é"])
def test_without_a_valid_key_it_is_401(gateway: Running, secret: str) -> None:
    headers = {b"authorization": f"Bearer {secret}".encode()} if secret else {}
    response = httpx.get(gateway.base + "/v1/key", headers=headers)
    assert response.status_code == 401, response.text


def test_a_revoked_key_is_401(gateway: Running, account: Account) -> None:
    key = account.mint("gone")
    assert httpx.delete(
        gateway.base + f"/v1/keys/{key['id']}", headers={"Authorization": f"Bearer {account.master_key}"}
    ).is_success
    assert own_key(gateway, key["secret"]).status_code == 401


def test_over_grpc_only_a_key_can_ask_for_itself(gateway: Running) -> None:
    token = (gateway.data_dir / "service-token").read_text().strip()
    with grpc.insecure_channel(gateway.grpc) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetOwnKey(usage_pb2.GetOwnKeyRequest(), metadata=(("authorization", f"Bearer {token}"),))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

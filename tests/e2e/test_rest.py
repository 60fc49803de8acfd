"""The brief's REST API, verbatim, with a master key."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import openai

from tests.e2e.conftest import Account, Running


def call(gateway: Running, method: str, path: str, key: str, **kw: object) -> httpx.Response:
    return httpx.request(method, gateway.base + path, headers={"Authorization": f"Bearer {key}"}, **kw)  # type: ignore[arg-type]


def test_mint_exactly_as_the_brief_does(gateway: Running, account: Account) -> None:
    response = call(
        gateway,
        "POST",
        "/v1/keys",
        account.master_key,
        json={"name": "user_42", "scope": "standard", "max_spend_usd": 5},
    )
    assert response.status_code == 201
    body = response.json()
    key_id, secret = body["id"], body["secret"]  # const { id: keyId, secret } = await res.json();
    assert key_id.startswith("key_") and secret.startswith("sg_live_")
    assert (body["name"], body["scope"], body["max_spend_usd"], body["max_spend_micros"]) == (
        "user_42",
        "standard",
        "5",
        5_000_000,
    )
    fetched = call(gateway, "GET", f"/v1/keys/{key_id}", account.master_key).json()
    assert "secret" not in fetched and fetched["remaining_micros"] == 5_000_000
    assert secret not in call(gateway, "GET", "/v1/keys", account.master_key).text


def test_fractional_usd_is_exact(gateway: Running, account: Account) -> None:
    body = account.mint("frac", max_spend_usd=0.1)
    assert body["max_spend_micros"] == 100_000 and body["max_spend_usd"] == "0.1"
    bad = call(
        gateway, "POST", "/v1/keys", account.master_key, json={"name": "x", "max_spend_usd": 0.0000001}
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_spend_usd"


def test_list_get_patch_delete(gateway: Running, account: Account) -> None:
    ids = [account.mint(f"u{i}")["id"] for i in range(3)]
    page = call(gateway, "GET", "/v1/keys?limit=2", account.master_key).json()
    rest = call(
        gateway, "GET", f"/v1/keys?limit=2&page_token={page['next_page_token']}", account.master_key
    ).json()
    listed = [k["id"] for k in page["data"] + rest["data"]]
    assert set(ids) <= set(listed) and len(listed) == 4  # + the master key
    patched = call(
        gateway,
        "PATCH",
        f"/v1/keys/{ids[0]}",
        account.master_key,
        json={"max_spend_usd": "12.5", "name": "renamed", "allowed_models": ["gpt-4o-mini"]},
    ).json()
    assert (patched["max_spend_micros"], patched["name"], patched["allowed_models"]) == (
        12_500_000,
        "renamed",
        ["gpt-4o-mini"],
    )
    uncapped = call(
        gateway, "PATCH", f"/v1/keys/{ids[0]}", account.master_key, json={"max_spend_usd": None}
    ).json()
    assert uncapped["max_spend_micros"] is None
    deleted = call(gateway, "DELETE", f"/v1/keys/{ids[1]}", account.master_key).json()
    assert deleted["revoked"] is True
    remaining = [k["id"] for k in call(gateway, "GET", "/v1/keys", account.master_key).json()["data"]]
    assert ids[1] not in remaining


def test_usage_rollup_and_key_drill_down_in_the_briefs_shape(gateway: Running, account: Account) -> None:
    key = account.mint("billing_user", max_spend_usd=1)
    start = int(time.time() * 1000) - 1000
    with openai.OpenAI(base_url=gateway.base + "/v1", api_key=str(key["secret"]), max_retries=0) as sdk:
        for _ in range(2):
            sdk.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=3
            )
    events = account.events(str(key["id"]), 2)
    end = int(time.time() * 1000) + 1000
    rollup = call(gateway, "GET", f"/v1/usage?from_ms={start}&to_ms={end}", account.master_key).json()
    (row,) = [r for r in rollup["by_key"] if r["key_id"] == key["id"]]
    assert {"key_id", "name", "requests", "input_tokens", "output_tokens", "cost_micros", "by_model"} <= set(
        row
    )
    assert row["name"] == "billing_user" and row["requests"] == 2 and row["output_tokens"] == 6
    assert row["cost_micros"] == sum(e["cost_micros"] for e in events)  # type: ignore[misc]
    (model,) = row["by_model"]
    assert {
        "model",
        "provider",
        "requests",
        "input_tokens",
        "output_tokens",
        "cost_micros",
        "avg_latency_ms",
    } <= set(model)
    assert (model["model"], model["provider"], model["requests"]) == ("gpt-4o-mini", "openai", 2)

    drill = call(gateway, "GET", f"/v1/keys/{key['id']}/usage?limit=1", account.master_key).json()
    assert drill["max_spend_micros"] == 1_000_000 and drill["spent_micros"] == row["cost_micros"]
    assert drill["remaining_micros"] == 1_000_000 - row["cost_micros"] and drill["reserved_micros"] == 0
    assert drill["cap_used_bps"] == row["cost_micros"] * 10_000 // 1_000_000
    (event,) = drill["events"]
    assert {
        "request_id",
        "ts_ms",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cost_micros",
        "latency_ms",
        "status",
    } <= set(event)
    older = call(
        gateway,
        "GET",
        f"/v1/keys/{key['id']}/usage?limit=1&page_token={drill['next_page_token']}",
        account.master_key,
    ).json()
    assert older["events"][0]["ts_ms"] <= event["ts_ms"] and older["next_page_token"] is None


def test_standard_key_gets_403_and_other_accounts_key_404(
    gateway: Running, account: Account, new_account: Callable[..., Account]
) -> None:
    standard = account.mint("plain")
    secret = str(standard["secret"])
    for method, path in [
        ("POST", "/v1/keys"),
        ("GET", "/v1/keys"),
        ("GET", "/v1/usage?from_ms=0&to_ms=1"),
        ("GET", f"/v1/keys/{standard['id']}/usage"),
    ]:
        response = call(gateway, method, path, secret, json={"name": "x"} if method == "POST" else None)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["code"] == "master_key_required"  # not the model error's code
    other = new_account()
    theirs = other.mint("theirs")
    for method, path in [
        ("GET", f"/v1/keys/{theirs['id']}"),
        ("PATCH", f"/v1/keys/{theirs['id']}"),
        ("DELETE", f"/v1/keys/{theirs['id']}"),
        ("GET", f"/v1/keys/{theirs['id']}/usage"),
    ]:
        response = call(
            gateway, method, path, account.master_key, json={"name": "hijack"} if method == "PATCH" else None
        )
        assert response.status_code == 404, (method, path, response.text)
    assert call(gateway, "GET", f"/v1/keys/{theirs['id']}", other.master_key).json()["revoked"] is False
    unknown = call(gateway, "GET", "/v1/keys", "sg_live_nope")
    assert unknown.status_code == 401 and unknown.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(gateway.base + "/v1/keys").status_code == 401


def test_bad_rest_input_names_the_field(gateway: Running, account: Account) -> None:
    for body, param in [
        ({"name": ""}, "name"),
        ({"name": "x", "scope": "root"}, "scope"),
        ({"name": "x", "max_spend_usd": -1}, "max_spend_usd"),
        ({"name": "x", "max_spend_usd": True}, "max_spend_usd"),
        ({"name": "x", "allowed_models": "gpt-4o"}, "allowed_models"),
    ]:
        response = call(gateway, "POST", "/v1/keys", account.master_key, json=body)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, body
    garbage = call(gateway, "POST", "/v1/keys", account.master_key, content=b"{nope")
    assert garbage.status_code == 400
    missing = call(gateway, "GET", "/v1/usage?from_ms=abc&to_ms=1", account.master_key)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "from_ms"

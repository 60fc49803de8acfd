"""Threshold webhooks as a user sets them up: configured over the REST facade of `spendgate
up`, fired by real traffic through the gateway (the openai SDK), delivered to a receiver on
loopback that verifies each signature the way the README tells users to."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import Account, Running
from tests.receiver import Receiver, running_receiver

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_verify() -> Callable[..., bool]:
    """The verification snippet of the README's Webhooks section, as a user would paste it."""
    section = README.read_text().split("## Webhooks\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    verify: Callable[..., bool] = namespace["verify"]
    return verify


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


def call(gateway: Running, method: str, path: str, key: str, **kw: object) -> httpx.Response:
    return httpx.request(method, gateway.base + path, headers={"Authorization": f"Bearer {key}"}, **kw)  # type: ignore[arg-type]


def test_real_traffic_crossing_50_80_100_fires_each_once(
    gateway: Running, account: Account, receiver: Receiver
) -> None:
    key = account.mint("hooked", max_spend_usd="0.006")  # 6,000 micros
    put = call(gateway, "PUT", "/v1/webhooks/endpoint", account.master_key, json={"url": receiver.url})
    assert put.status_code == 200, put.text
    receiver.secret = put.json()["secret"]
    assert receiver.secret.startswith("whsec_") and put.json()["event_types"] == []
    again = call(gateway, "GET", "/v1/webhooks/endpoint", account.master_key).json()
    assert again["secret_prefix"] == receiver.secret[:10] and "secret" not in again
    thresholds = call(gateway, "GET", f"/v1/keys/{key['id']}/thresholds", account.master_key).json()
    assert thresholds == {"key_id": key["id"], "percents": [50, 80, 100]}

    client = openai.OpenAI(base_url=gateway.base + "/v1", api_key=str(key["secret"]), max_retries=0)
    sent = 0
    with client:
        # About 600 micros each (1,000 output tokens of gpt-4o-mini): ten of them reach the cap.
        while sent < 20:
            try:
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "hi"}],
                    max_tokens=2000,
                    extra_headers={"x-mock-output-tokens": "1000"},
                )
            except openai.APIStatusError as exc:
                assert exc.status_code == 402  # the cap: the last one was admitted, this one not
                break
            sent += 1
            account.events(str(key["id"]), sent)  # settled, so each crossing is its own batch
    assert 10 <= sent <= 11
    got = sorted(receiver.wait_delivered(3), key=lambda a: int(a.event["data"]["threshold_percent"]))
    time.sleep(1.0)  # the deliverer polls every 0.5 s: nothing else comes
    assert len(receiver.attempts) == 3
    verify = readme_verify()
    for attempt in got:
        assert attempt.valid and abs(int(attempt.timestamp) - time.time()) < 300
        headers = {
            "webhook-id": attempt.webhook_id,
            "webhook-timestamp": attempt.timestamp,
            "webhook-signature": attempt.signature,
        }
        assert verify(receiver.secret, headers, attempt.body)
        assert not verify(receiver.secret, headers, attempt.body + b" ")
        assert not verify(receiver.secret, {**headers, "webhook-timestamp": "1"}, attempt.body)
    assert [(a.event["type"], a.event["data"]["threshold_percent"]) for a in got] == [
        ("key.threshold_crossed", 50),
        ("key.threshold_crossed", 80),
        ("key.cap_reached", 100),
    ]
    listed = call(gateway, "GET", "/v1/webhooks/deliveries", account.master_key).json()
    assert [d["status"] for d in listed["data"]] == ["delivered"] * 3
    assert {d["event_id"] for d in listed["data"]} == {a.webhook_id for a in got}
    pending = call(gateway, "GET", "/v1/webhooks/deliveries?status=pending", account.master_key).json()
    assert pending == {"data": [], "next_page_token": None}
    # Sent again by hand (the app lost it): the same id and body, once more.
    first = listed["data"][0]
    retried = call(gateway, "POST", f"/v1/webhooks/deliveries/{first['event_id']}/retry", account.master_key)
    assert retried.status_code == 200, retried.text
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)
    resent = receiver.wait_delivered(4)[-1]
    assert resent.webhook_id == first["event_id"] and resent.body == first["body"].encode() and resent.valid
    missing = call(gateway, "POST", "/v1/webhooks/deliveries/evt_nope/retry", account.master_key)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"


def test_thresholds_and_wallet_low_are_set_over_rest(gateway: Running, account: Account) -> None:
    key = account.mint("t", max_spend_usd=1)
    done = call(
        gateway, "PUT", f"/v1/keys/{key['id']}/thresholds", account.master_key, json={"percents": [90, 25]}
    )
    assert done.status_code == 200 and done.json() == {"key_id": key["id"], "percents": [25, 90]}
    low = call(gateway, "PUT", "/v1/webhooks/wallet-threshold", account.master_key, json={"low_usd": "2.5"})
    assert low.status_code == 200 and low.json() == {"low_micros": 2_500_000, "low_usd": "2.5"}
    off = call(gateway, "PUT", "/v1/webhooks/wallet-threshold", account.master_key, json={"low_usd": None})
    assert off.json() == {"low_micros": None, "low_usd": None}


@pytest.mark.parametrize(
    ("method", "path", "body", "param"),
    [
        ("PUT", "/v1/webhooks/endpoint", {"url": "ftp://example.com/x"}, "url"),
        ("PUT", "/v1/webhooks/endpoint", {"url": "http://"}, "url"),
        ("PUT", "/v1/webhooks/endpoint", {}, "url"),
        ("PUT", "/v1/webhooks/endpoint", {"url": "https://example.com", "event_types": ["x"]}, "event_types"),
        ("PUT", "/v1/webhooks/endpoint", {"url": "https://example.com", "event_types": "all"}, "event_types"),
        # Falsy non-lists are not the empty list (which means every type).
        ("PUT", "/v1/webhooks/endpoint", {"url": "https://example.com", "event_types": False}, "event_types"),
        ("PUT", "/v1/webhooks/endpoint", {"url": "https://example.com", "event_types": ""}, "event_types"),
        ("PUT", "/v1/webhooks/endpoint", {"url": "https://example.com", "event_types": {}}, "event_types"),
        ("PUT", "/v1/keys/{key}/thresholds", {"percents": [0]}, "percents"),
        ("PUT", "/v1/keys/{key}/thresholds", {"percents": [50, 101]}, "percents"),
        ("PUT", "/v1/keys/{key}/thresholds", {"percents": [10**30]}, "percents"),
        ("PUT", "/v1/keys/{key}/thresholds", {"percents": [True]}, "percents"),
        ("PUT", "/v1/keys/{key}/thresholds", {"percents": "50"}, "percents"),
        ("PUT", "/v1/webhooks/wallet-threshold", {"low_usd": "-1"}, "low_usd"),
        ("PUT", "/v1/webhooks/wallet-threshold", {}, "low_usd"),
        ("GET", "/v1/webhooks/deliveries?status=lost", None, "status"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    gateway: Running, account: Account, method: str, path: str, body: object, param: str
) -> None:
    key = account.mint("bad")
    response = call(gateway, method, path.format(key=key["id"]), account.master_key, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_another_accounts_key_and_a_missing_endpoint_are_404(
    gateway: Running, account: Account, new_account: Callable[..., Account]
) -> None:
    theirs = new_account().mint("theirs")
    for method, body in (("PUT", {"percents": [50]}), ("GET", None)):
        response = call(gateway, method, f"/v1/keys/{theirs['id']}/thresholds", account.master_key, json=body)
        assert response.status_code == 404, response.text
    assert call(gateway, "GET", "/v1/webhooks/endpoint", account.master_key).status_code == 404
    assert call(gateway, "DELETE", "/v1/webhooks/endpoint", account.master_key).status_code == 404


def test_a_standard_key_may_not_configure_webhooks(gateway: Running, account: Account) -> None:
    key = account.mint("user")
    response = call(
        gateway, "PUT", "/v1/webhooks/endpoint", str(key["secret"]), json={"url": "https://example.com"}
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "master_key_required"


def test_delete_then_get_is_404(gateway: Running, account: Account, receiver: Receiver) -> None:
    put = call(gateway, "PUT", "/v1/webhooks/endpoint", account.master_key, json={"url": receiver.url})
    assert put.status_code == 200
    deleted = call(gateway, "DELETE", "/v1/webhooks/endpoint", account.master_key)
    assert deleted.json() == {"deleted": True, "dropped_deliveries": 0}
    assert call(gateway, "GET", "/v1/webhooks/endpoint", account.master_key).status_code == 404

"""Caps, refusals and failures as an SDK user sees them."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from fakeupstream.server import MockUpstream
from tests.e2e.conftest import Account, Running, start_up, stop_up, upstream_env

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Count to ten."}]


def sdk(gateway: Running, key: dict[str, object] | str) -> openai.OpenAI:
    secret = key if isinstance(key, str) else str(key["secret"])
    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=secret, max_retries=0)


def test_over_cap_is_402_before_any_byte_goes_upstream(
    gateway: Running, account: Account, mock: MockUpstream
) -> None:
    key = account.mint("capped", max_spend_usd="0.00001")  # 10 micros: one request uses it up
    with sdk(gateway, key) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
        account.events(str(key["id"]), 1)
        seen = len(mock.requests)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    assert info.value.status_code == 402
    assert len(mock.requests) == seen  # nothing was forwarded
    message = info.value.message
    assert "cap $0.00001" in message and "spent $" in message and "resets never" in message
    assert info.value.body["code"] == "spend_cap_exceeded"  # type: ignore[index]


def test_monthly_cap_402_says_when_it_resets(gateway: Running, account: Account) -> None:
    key = account.mint("monthly", max_spend_usd=0, cap_period="monthly")
    with sdk(gateway, key) as client, pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert info.value.status_code == 402 and "-01T00:00:00Z" in info.value.message


def test_unknown_missing_and_revoked_keys_are_401(
    gateway: Running, account: Account, mock: MockUpstream
) -> None:
    seen = len(mock.requests)
    with sdk(gateway, "sg_live_" + "x" * 43) as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    bare = httpx.post(
        gateway.base + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}
    )
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "invalid_api_key"
    assert len(mock.requests) == seen


def test_revocation_reaches_every_worker_within_a_second(gateway: Running, account: Account) -> None:
    key = account.mint("to-revoke")
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 1}
    headers = {"Authorization": f"Bearer {key['secret']}"}

    def fresh_connection_status() -> int:
        return httpx.post(gateway.base + "/v1/chat/completions", json=body, headers=headers).status_code

    with ThreadPoolExecutor(8) as pool:  # warm the key into both workers' caches
        assert set(pool.map(lambda _: fresh_connection_status(), range(24))) == {200}
    revoked = httpx.delete(
        gateway.base + f"/v1/keys/{key['id']}", headers={"Authorization": f"Bearer {account.master_key}"}
    )
    assert revoked.json()["revoked"] is True
    started = time.monotonic()
    while fresh_connection_status() != 401:
        assert time.monotonic() - started < 1.0
    first_refusal = time.monotonic() - started
    time.sleep(max(0.0, 1.0 - first_refusal))
    with ThreadPoolExecutor(8) as pool:  # one second on: refused by every worker
        statuses = list(pool.map(lambda _: fresh_connection_status(), range(24)))
    print(f"revoked key first refused after {1000 * first_refusal:.0f} ms")
    assert set(statuses) == {401}


def test_bad_requests_are_400_in_openai_shape(
    gateway: Running, user_key: dict[str, object], mock: MockUpstream
) -> None:
    headers = {"Authorization": f"Bearer {user_key['secret']}", "content-type": "application/json"}
    seen = len(mock.requests)
    for raw, fragment in [
        (b"{not json", "parse the JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"messages": MESSAGES}).encode(), "model parameter"),
        (json.dumps({"model": "gpt-9-imaginary", "messages": MESSAGES}).encode(), "gpt-9-imaginary"),
    ]:
        response = httpx.post(gateway.base + "/v1/chat/completions", content=raw, headers=headers)
        assert response.status_code == 400, raw
        error = response.json()["error"]
        assert fragment in error["message"] and error["type"] == "invalid_request_error"
    with sdk(gateway, user_key) as client, pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-9-imaginary", messages=MESSAGES)
    assert len(mock.requests) == seen


def test_upstream_5xx_passes_through_and_costs_nothing(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    with sdk(gateway, user_key) as client, pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-mock-status": "500"}
        )
    assert info.value.status_code == 500
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["cost_micros"], event["status"]) == (0, "upstream_error")


def test_upstream_dying_mid_stream_bills_what_was_delivered(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    with sdk(gateway, user_key) as client, pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            max_tokens=100,
            extra_headers={"x-mock-abort-after": "5", "x-mock-output-tokens": "100"},
        ):
            pass
    (event,) = account.events(str(user_key["id"]), 1)
    assert event["status"] == "upstream_aborted" and event["estimated"] is True
    assert 0 < cast(int, event["output_tokens"]) < 100


def test_fan_out_overspends_by_at_most_one_estimate(
    gateway: Running, account: Account, mock: MockUpstream
) -> None:
    # Each request: max_tokens 100 → estimate = body bytes × 0.15 + 100 × 0.6 micros ≈ 90;
    # actual = prompt × 0.15 + 100 × 0.6 ≈ 61. Cap 300 micros: ~4 fit, 50 arrive at once.
    key = account.mint("fanout", max_spend_usd="0.0003")
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 100}
    headers = {
        "Authorization": f"Bearer {key['secret']}",
        "x-mock-delay-ms": "300",
        "x-mock-output-tokens": "100",
    }
    estimate = -(-(len(json.dumps(body).encode()) * 150_000 + 100 * 600_000) // 1_000_000)
    seen = len(mock.requests)

    def one(_: int) -> int:
        return httpx.post(
            gateway.base + "/v1/chat/completions", json=body, headers=headers, timeout=30
        ).status_code

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(one, range(50)))
    admitted = statuses.count(200)
    assert admitted + statuses.count(402) == 50 and 0 < admitted < 10
    assert len(mock.requests) - seen == admitted  # refused ones never reached the provider
    events = account.events(str(key["id"]), admitted)
    spent = sum(int(e["cost_micros"]) for e in events)  # type: ignore[call-overload]
    usage = account.key_usage(str(key["id"]))
    assert usage["spent_micros"] == spent and usage["reserved_micros"] == 0
    print(f"fan-out: {admitted}/50 admitted, spent {spent} micros on a 300-micro cap (estimate {estimate})")
    assert spent <= 300 + estimate


@pytest.fixture(scope="module")
def strict_gateway(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A gateway with a small body limit, a short upstream timeout and a dead Anthropic upstream."""
    env = {
        **upstream_env(mock),
        "SPENDGATE_ANTHROPIC_BASE_URL": "http://127.0.0.1:9",  # discard port: nothing listens
        "SPENDGATE_MAX_BODY_BYTES": "2000",
        "SPENDGATE_UPSTREAM_READ_TIMEOUT": "1",
    }
    running = start_up(tmp_path_factory.mktemp("strict") / "data", env, workers=1)
    yield running
    stop_up(running)


def strict_account(gateway: Running) -> Account:
    from clients.client import ControlPlaneClient

    with ControlPlaneClient(gateway.grpc, gateway.admin_token) as admin:
        created = admin.create_account("strict-" + uuid.uuid4().hex[:6], 10_000_000)
    return Account(created.account.id, created.master_key_secret, gateway)


def test_body_too_large_is_413(strict_gateway: Running) -> None:
    account = strict_account(strict_gateway)
    key = account.mint("big")
    huge = [{"role": "user", "content": "x" * 5000}]
    with sdk(strict_gateway, key) as client, pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=huge)  # type: ignore[arg-type]
    assert info.value.status_code == 413
    assert account.key_usage(str(key["id"]))["reserved_micros"] == 0


def test_upstream_unreachable_is_502_and_timeout_504_and_nothing_is_held(strict_gateway: Running) -> None:
    import anthropic

    account = strict_account(strict_gateway)
    key = account.mint("faults")
    with anthropic.Anthropic(
        base_url=strict_gateway.base, api_key=str(key["secret"]), max_retries=0
    ) as client:
        with pytest.raises(anthropic.APIStatusError) as down:
            client.messages.create(model="claude-sonnet-4-6", max_tokens=1, messages=MESSAGES)  # type: ignore[arg-type]
    assert down.value.status_code == 502 and down.value.body["type"] == "error"  # type: ignore[index]
    with sdk(strict_gateway, key) as client, pytest.raises(openai.APIStatusError) as slow:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-mock-delay-ms": "3000"}
        )
    assert slow.value.status_code == 504
    deadline = time.monotonic() + 5
    while account.key_usage(str(key["id"]))["reserved_micros"] and time.monotonic() < deadline:
        time.sleep(0.05)
    usage = account.key_usage(str(key["id"]))
    assert usage["reserved_micros"] == 0 and usage["spent_micros"] == 0


def test_healthz_is_503_without_a_control_plane(tmp_path: Path) -> None:
    import subprocess

    from tests.support import SPENDGATE, free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            SPENDGATE,
            "dataplane",
            "--controlplane",
            f"127.0.0.1:{free_port()}",
            "--http-port",
            str(port),
            "--spool-dir",
            str(tmp_path / "spool"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3).status_code
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert status == 503
    finally:
        proc.terminate()
        proc.wait(15)


def test_garbage_sse_is_passed_on_and_metered_from_what_parses(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, "max_tokens": 5}
    headers = {"Authorization": f"Bearer {user_key['secret']}", "x-mock-garbage": "1"}
    with httpx.stream("POST", gateway.base + "/v1/chat/completions", json=body, headers=headers) as response:
        raw = b"".join(response.iter_bytes())
    assert response.status_code == 200 and b"[DONE]" in raw
    (event,) = account.events(str(user_key["id"]), 1)
    assert event["output_tokens"] == 5 and event["status"] == "ok" and event["estimated"] is False


def test_upstream_hanging_mid_stream_times_out_with_a_stream_error(strict_gateway: Running) -> None:
    account = strict_account(strict_gateway)
    key = account.mint("hang")
    with sdk(strict_gateway, key) as client, pytest.raises(openai.APIError) as info:
        for _ in client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            max_tokens=10,
            extra_headers={"x-mock-chunk-delay-ms": "1500"},  # longer than the 1 s read timeout
        ):
            pass
    assert "closed the stream" in str(info.value)
    (event,) = account.events(str(key["id"]), 1)
    # Nothing was delivered before the provider went quiet: nothing is billed.
    assert (event["status"], event["cost_micros"], event["output_tokens"]) == ("upstream_aborted", 0, 0)
    assert account.key_usage(str(key["id"]))["reserved_micros"] == 0

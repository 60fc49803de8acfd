"""Per-key rate limits through `spendgate up --workers 2`, driven by the official SDKs:
one count for every worker, 429s the SDKs raise as RateLimitError (and retry after
`retry-after`), OpenAI's x-ratelimit-* headers, and no slot left behind."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.conftest import Account, Running

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "rate limits"}]


def chat(gateway: Running, key: dict[str, object], headers: dict[str, str] | None = None) -> httpx.Response:
    """One request on a connection of its own, so that the two workers share the traffic."""
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 10}
    return httpx.post(
        gateway.base + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key['secret']}", **(headers or {})},
        json=body,
        timeout=30,
    )


def sdk(gateway: Running, key: dict[str, object], retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=str(key["secret"]), max_retries=retries)


def test_requests_per_minute_are_one_count_across_workers(gateway: Running, account: Account) -> None:
    key = account.mint("rpm", rpm_limit=6)
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: chat(gateway, key), range(16)))
    elapsed = time.monotonic() - began
    admitted = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(admitted) + len(refused) == 16
    # Six, plus one for every 10 s the burst took (the bucket refills at 6 a minute).
    assert 6 <= len(admitted) <= 6 + int(elapsed / 10)
    body = refused[0].json()["error"]
    assert body["code"] == "rate_limit_exceeded" and body["type"] == "requests"
    assert "requests per min (RPM): limit 6" in body["message"]
    wait = int(refused[0].headers["retry-after-ms"])
    assert 0 < wait <= 10_000 and refused[0].headers["retry-after"] == str(-(-wait // 1000))
    assert refused[0].headers["x-ratelimit-limit-requests"] == "6"
    assert refused[0].headers["x-ratelimit-remaining-requests"] == "0"
    assert refused[0].headers["x-should-retry"] == "true"
    remaining = sorted(int(a.headers["x-ratelimit-remaining-requests"]) for a in admitted)
    assert (
        remaining[0] == 0 and remaining[-1] <= 5 and admitted[0].headers["x-ratelimit-limit-requests"] == "6"
    )
    assert all("x-ratelimit-limit-tokens" not in a.headers for a in answers)  # no token limit set
    account.events(str(key["id"]), len(admitted))


def test_the_sdks_raise_their_rate_limit_errors(gateway: Running, account: Account) -> None:
    key = account.mint("sdk", rpm_limit=1)
    with sdk(gateway, key) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
        assert raw.headers["x-ratelimit-limit-requests"] == "1"
        assert raw.headers["x-ratelimit-remaining-requests"] == "0"
        assert raw.headers["x-ratelimit-reset-requests"] in ("1m0s", "59.999s", "59.998s")
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert refused.value.status_code == 429 and refused.value.code == "rate_limit_exceeded"
    claude = anthropic.Anthropic(base_url=gateway.base, api_key=str(key["secret"]), max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
    assert limited.value.status_code == 429
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(limited.value.response.headers["retry-after"]) >= 1
    gemini = genai.Client(
        api_key=str(key["secret"]),
        http_options=genai_types.HttpOptions(base_url=gateway.base, api_version="v1beta"),
    )
    with pytest.raises(genai_errors.ClientError) as exhausted:
        gemini.models.generate_content(model="gemini-2.5-flash", contents="hello")
    assert exhausted.value.code == 429 and exhausted.value.status == "RESOURCE_EXHAUSTED"


def test_requests_in_flight_are_limited(gateway: Running, account: Account) -> None:
    key = account.mint("parallel", max_parallel_requests=2)
    slow = {"x-mock-delay-ms": "2500"}
    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(lambda _: chat(gateway, key, slow), range(5)))
    assert sorted(a.status_code for a in answers) == [200, 200, 429, 429, 429]
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"]["type"] == "parallel" and refused.headers["retry-after"] == "1"
    account.events(str(key["id"]), 2)  # settled: their slots are free on every worker


def test_the_sdk_retries_after_retry_after(gateway: Running, account: Account) -> None:
    key = account.mint("retried", max_parallel_requests=1)
    running = threading.Thread(target=chat, args=(gateway, key, {"x-mock-delay-ms": "1200"}))
    running.start()
    try:
        deadline = time.monotonic() + 5
        while account.get(f"/v1/keys/{key['id']}").json()["reserved_micros"] == 0:  # it holds the slot
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with sdk(gateway, key, retries=5) as client:
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        running.join()
    # Refused while the slow one ran (429, retry-after: 1), then let in by a retry.
    assert raw.http_response.status_code == 200 and raw.retries_taken >= 1


def test_tokens_are_counted_from_the_estimate_and_corrected_by_the_usage(
    gateway: Running, account: Account
) -> None:
    key = account.mint("tpm", tpm_limit=1_000)
    body = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 600}).encode()
    estimate = len(body) + 600  # every byte of the body, and the output limit

    def send(extra: dict[str, str] | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key['secret']}", "content-type": "application/json"}
        return httpx.post(
            gateway.base + "/v1/chat/completions", headers={**headers, **(extra or {})}, content=body
        )

    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(send, {"x-mock-output-tokens": "5", "x-mock-delay-ms": "1000"})
        deadline = time.monotonic() + 5
        while account.get(f"/v1/keys/{key['id']}").json()["reserved_micros"] == 0:  # counted, in flight
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = send()
        first = slow.result()
    assert first.status_code == 200, first.text
    assert int(first.headers["x-ratelimit-remaining-tokens"]) == 1_000 - estimate
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    assert second.status_code == 429 and second.json()["error"]["type"] == "tokens"
    assert "tokens per min (TPM): limit 1000" in second.json()["error"]["message"]
    (event,) = account.events(str(key["id"]), 1)
    used = int(str(event["input_tokens"])) + int(str(event["output_tokens"]))
    assert used < estimate
    third = send()  # the first one's unused estimate came back when it settled
    assert third.status_code == 200, third.text
    assert int(third.headers["x-ratelimit-remaining-tokens"]) >= 1_000 - used - estimate


def test_no_slot_is_left_behind_by_a_disconnect_an_upstream_error_or_a_402(
    gateway: Running, account: Account
) -> None:
    key = account.mint("leaks", max_parallel_requests=1, max_spend_usd="0.0001")
    with pytest.raises(httpx.ReadTimeout):  # the client leaves; the gateway reads the answer to its end
        httpx.post(
            gateway.base + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key['secret']}", "x-mock-delay-ms": "800"},
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 10},
            timeout=0.2,
        )
    account.events(str(key["id"]), 1)
    assert chat(gateway, key, {"x-mock-status": "500"}).status_code == 500
    account.events(str(key["id"]), 2)
    deadline = time.monotonic() + 30
    # Spend the cap. (A 429 may come while the previous request's settlement is on its way
    # from another worker; a leaked slot would keep answering 429 until the deadline.)
    while (answer := chat(gateway, key)).status_code in (200, 429) and time.monotonic() < deadline:
        pass
    assert answer.status_code == 402, answer.text
    patched = httpx.patch(
        gateway.base + f"/v1/keys/{key['id']}",
        headers={"Authorization": f"Bearer {account.master_key}"},
        json={"max_spend_usd": 5},
    )
    assert patched.status_code == 200 and patched.json()["max_parallel_requests"] == 1
    settled = len(account.get(f"/v1/keys/{key['id']}/usage?limit=1000").json()["events"])
    account.events(str(key["id"]), settled)
    deadline = time.monotonic() + 10
    while (after := chat(gateway, key)).status_code in (402, 429) and time.monotonic() < deadline:
        time.sleep(0.05)  # the new cap reaches both workers
    assert after.status_code == 200, after.text  # nothing held the slot


def test_limits_over_rest_shown_changed_and_refused_when_bad(account: Account) -> None:
    key = account.mint("rest", rpm_limit=60, tpm_limit=90_000)
    assert (key["rpm_limit"], key["tpm_limit"], key["max_parallel_requests"]) == (60, 90_000, None)
    path = f"/v1/keys/{key['id']}"
    headers = {"Authorization": f"Bearer {account.master_key}"}
    changed = httpx.patch(
        account.gateway.base + path, headers=headers, json={"rpm_limit": None, "max_parallel_requests": 3}
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["rpm_limit"], changed.json()["max_parallel_requests"]) == (None, 3)
    listed = {k["id"]: k for k in account.get("/v1/keys").json()["data"]}
    assert listed[key["id"]]["tpm_limit"] == 90_000 and listed[key["id"]]["max_parallel_requests"] == 3
    for bad in ({"rpm_limit": 0}, {"tpm_limit": "100"}, {"max_parallel_requests": True}, {"rpm_limit": -1}):
        refused = httpx.post(account.gateway.base + "/v1/keys", headers=headers, json={"name": "bad", **bad})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == next(iter(bad))


def test_the_keys_headers_replace_the_providers_and_a_key_without_limits_gets_the_providers(
    gateway: Running, account: Account
) -> None:
    provider = {"x-mock-ratelimit-headers": "1"}
    plain = chat(gateway, account.mint("plain"), provider)
    assert plain.status_code == 200 and plain.headers["x-ratelimit-limit-requests"] == "10000"  # untouched
    assert plain.headers["x-ratelimit-remaining-tokens"] == "29999990"
    limited = chat(gateway, account.mint("limited", rpm_limit=30), provider)
    assert limited.status_code == 200 and limited.headers.get_list("x-ratelimit-limit-requests") == ["30"]
    assert limited.headers["x-ratelimit-remaining-requests"] == "29"
    assert limited.headers["x-ratelimit-reset-requests"] == "2s"  # one request back every 2 s
    assert "x-ratelimit-remaining-tokens" not in limited.headers  # the provider's, dropped; no token limit
    assert "x-ratelimit-limit-requests" not in chat(gateway, account.mint("quiet")).headers


def test_an_image_route_counts_no_tokens_at_admission_or_at_settlement(
    gateway: Running, account: Account
) -> None:
    """docs/rate-limits.md: speech, transcription and image routes count no tokens. An image
    billed by tokens (gpt-image-1: 4160 output tokens here) must not put the key's tokens
    per minute in debt, refusing its next chat requests for minutes."""
    key = account.mint("tpm-images", tpm_limit=2_000)
    with sdk(gateway, key) as client:
        client.images.generate(model="gpt-image-1", prompt="a lighthouse", size="1024x1024", quality="high")
        (event,) = account.events(str(key["id"]), 1)  # settled: what it used is known
        assert int(str(event["output_tokens"])) > 2_000
        for _ in range(2):  # on either worker
            answer = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=10
            )
            assert int(answer.headers["x-ratelimit-remaining-tokens"]) > 0

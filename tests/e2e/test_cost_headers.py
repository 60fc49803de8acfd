"""Cost headers (issue 13.4): a client that sends `x-spendgate-include-cost: true` gets a
JSON answer's cost and its key's remaining budget in the response headers, read from
the control plane's own settlement, through the official SDKs."""

from __future__ import annotations

import anthropic
import httpx

from fakeupstream.media import mock_audio
from fakeupstream.server import MockUpstream
from tests.e2e.conftest import Account, Running
from tests.e2e.test_caps_and_errors import MESSAGES, sdk

ASK = {"x-spendgate-include-cost": "true"}


def cost(event: dict[str, object]) -> int:
    return int(str(event["cost_micros"]))


def remaining_of(gateway: Running, secret: object) -> int:
    response = httpx.get(gateway.base + "/v1/key", headers={"Authorization": f"Bearer {secret}"})
    return int(response.json()["data"]["limit_remaining_micros"])


def test_a_json_answer_carries_its_cost_and_what_the_key_has_left(
    gateway: Running, account: Account, mock: MockUpstream
) -> None:
    key = account.mint("priced", max_spend_usd=5)
    with sdk(gateway, key) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=30,
            extra_headers={**ASK, "x-mock-output-tokens": "5"},
        )
        second = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=30,
            extra_headers={**ASK, "x-mock-output-tokens": "25"},
        )
    assert raw.parse().choices[0].message.content  # the answer itself is untouched
    assert "x-spendgate-include-cost" not in dict(
        mock.requests[-1].headers
    )  # the gateway's, not the provider's
    later, earlier = map(cost, account.events(str(key["id"]), 2))  # newest first
    assert int(raw.headers["x-spendgate-cost-micros"]) == earlier > 0
    assert int(second.headers["x-spendgate-cost-micros"]) == later > earlier  # 25 tokens, not 5
    assert int(raw.headers["x-spendgate-remaining-micros"]) == 5_000_000 - earlier
    assert int(second.headers["x-spendgate-remaining-micros"]) == 5_000_000 - earlier - later
    assert remaining_of(gateway, key["secret"]) == 5_000_000 - earlier - later


def test_without_the_header_or_a_cap_or_for_a_stream_there_is_less(
    gateway: Running, account: Account
) -> None:
    capped, uncapped = account.mint("plain", max_spend_usd=5), account.mint("open")
    with sdk(gateway, capped) as client:
        plain = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=5
        )
        with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=5, stream=True, extra_headers=ASK
        ) as streamed:
            assert "".join(streamed.iter_lines())  # read to its end: headers left before its usage
    assert not any(h.startswith("x-spendgate-cost") for h in plain.headers)
    assert not any(h.startswith("x-spendgate-cost") for h in streamed.headers)
    with sdk(gateway, uncapped) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=5, extra_headers=ASK
        )
    (event,) = account.events(str(uncapped["id"]), 1)
    assert int(raw.headers["x-spendgate-cost-micros"]) == cost(event)
    assert "x-spendgate-remaining-micros" not in raw.headers  # no cap, nothing to count down


def test_the_anthropic_sdk_gets_them_too(gateway: Running, account: Account) -> None:
    key = account.mint("claude", max_spend_usd=1)
    claude = anthropic.Anthropic(base_url=gateway.base, api_key=str(key["secret"]), max_retries=0)
    with claude:
        raw = claude.messages.with_raw_response.create(
            model="claude-sonnet-4-6",
            max_tokens=16,
            messages=[{"role": "user", "content": "Hello"}],
            extra_headers=ASK,
        )
    assert raw.parse().content
    (event,) = account.events(str(key["id"]), 1)
    assert int(raw.headers["x-spendgate-cost-micros"]) == cost(event) > 0
    assert int(raw.headers["x-spendgate-remaining-micros"]) == 1_000_000 - cost(event)


def test_a_providers_own_spendgate_headers_never_reach_the_client(gateway: Running, account: Account) -> None:
    """A provider behind another gateway answers with its x-spendgate-* headers: the client
    must read only this gateway's cost, remaining budget and request id."""
    key = account.mint("behind", max_spend_usd=5)
    knob = {"x-mock-gateway-headers": "1"}
    with sdk(gateway, key) as client:
        priced = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=5, extra_headers={**ASK, **knob}
        )
        plain = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=5, extra_headers=knob
        )
    second, first = account.events(str(key["id"]), 2)
    assert priced.headers.get_list("x-spendgate-cost-micros") == [str(cost(first))]
    assert priced.headers.get_list("x-spendgate-remaining-micros") == [str(5_000_000 - cost(first))]
    assert not any(name.startswith("x-spendgate-") and "micros" in name for name in plain.headers)
    for answer in (priced, plain):
        (request_id,) = answer.headers.get_list("x-spendgate-request-id")
        assert request_id != "req_of_the_provider"


def test_a_gemini_json_array_stream_is_streamed_not_held_for_its_cost(
    gateway: Running, account: Account
) -> None:
    """`:streamGenerateContent` without `?alt=sse` streams a JSON array (not SSE): a stream,
    so it carries no cost headers rather than being held whole until it is settled."""
    key = account.mint("gemini", max_spend_usd=1)
    body = {"contents": [{"parts": [{"text": "Hello"}]}], "generationConfig": {"maxOutputTokens": 5}}
    headers = {"x-goog-api-key": str(key["secret"]), **ASK, "x-mock-chunk-delay-ms": "200"}
    url = gateway.base + "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert "x-spendgate-cost-micros" not in response.headers
        # The headers came as the stream began: nothing of it is settled yet.
        assert account.get(f"/v1/keys/{key['id']}").json()["spent_micros"] == 0
        assert response.read().startswith(b"[{")
    (event,) = account.events(str(key["id"]), 1)
    assert event["output_tokens"] == 5


def test_audio_goes_on_as_it_comes_without_them(gateway: Running, account: Account) -> None:
    """ElevenLabs' /stream is chunked audio the route does not flag as a stream, and a whole
    speech answer is audio too: neither is held for its cost."""
    key = account.mint("speech", max_spend_usd=1)
    text = "Hello from the gateway, spoken aloud." * 20
    headers = {"xi-api-key": str(key["secret"]), **ASK}
    for path in ("/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream", "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM"):
        with httpx.stream(
            "POST", gateway.base + path, headers=headers, json={"text": text, "model_id": "eleven_flash_v2_5"}
        ) as response:
            audio = response.read()
        assert response.status_code == 200 and response.headers["content-type"].startswith("audio/")
        assert audio == mock_audio(text)
        assert not any(h.startswith("x-spendgate-cost") for h in response.headers)
    assert len(account.events(str(key["id"]), 2)) == 2  # metered all the same

"""The official google-genai SDK, unchanged but for its base URL, through spendgate:
Gemini's generate, stream (SSE and JSON-array forms), count and embed methods,
on both API versions the SDK speaks."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from google import genai
from google.genai import errors, types

from fakeupstream.gemini import PROMPT_FIELDS
from fakeupstream.server import MockUpstream, count_prompt_tokens, reply_text
from tests.e2e.conftest import UPSTREAM_GOOGLE_KEY, Account, Running

FLASH_IN, FLASH_CACHED, FLASH_OUT = 300_000, 30_000, 2_500_000  # gemini-2.5-flash, micros per Mtok
EMBED_IN = 150_000  # gemini-embedding-001
PROMPT = "Say hello to the gateway, please."
PROMPT_TOKENS = count_prompt_tokens({"contents": [{"parts": [{"text": PROMPT}]}]}, PROMPT_FIELDS)


def cost(inp: int, out: int, cached: int = 0) -> int:
    return -(-(inp * FLASH_IN + cached * FLASH_CACHED + out * FLASH_OUT) // 1_000_000)


@pytest.fixture(params=["v1beta", "v1"])
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client(gateway: Running, key: dict[str, object], version: str = "v1beta", **headers: str) -> genai.Client:
    options = types.HttpOptions(base_url=gateway.base, api_version=version, headers=headers or None)
    return genai.Client(api_key=str(key["secret"]), http_options=options)


@pytest.fixture
def sdk(gateway: Running, user_key: dict[str, object], version: str) -> Iterator[genai.Client]:
    with client(gateway, user_key, version) as c:
        yield c


def assert_upstream_got_the_provider_key(mock: MockUpstream, key: dict[str, object]) -> None:
    received = mock.requests[-1]
    assert received.header("x-goog-api-key") == UPSTREAM_GOOGLE_KEY
    secret = str(key["secret"])
    assert secret not in received.query and all(secret not in v for _, v in received.headers)


def test_generate_content_is_metered_exactly(
    sdk: genai.Client,
    version: str,
    account: Account,
    user_key: dict[str, object],
    mock: MockUpstream,
) -> None:
    config = types.GenerateContentConfig(max_output_tokens=12)
    reply = sdk.models.generate_content(model="gemini-2.5-flash", contents=PROMPT, config=config)
    assert reply.text == reply_text(12)
    assert reply.usage_metadata is not None and reply.usage_metadata.prompt_token_count == PROMPT_TOKENS
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["provider"], event["model"], event["status"]) == ("google", "gemini-2.5-flash", "ok")
    assert (event["input_tokens"], event["output_tokens"], event["estimated"]) == (PROMPT_TOKENS, 12, False)
    assert event["cost_micros"] == cost(PROMPT_TOKENS, 12)
    assert mock.requests[-1].path == f"/{version}/models/gemini-2.5-flash:generateContent"
    assert_upstream_got_the_provider_key(mock, user_key)


def test_generate_content_stream_is_metered_from_the_last_chunk(
    sdk: genai.Client, version: str, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    chunks = list(sdk.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT))
    assert len(chunks) == 16 and "".join(c.text or "" for c in chunks) == reply_text(16)
    received = mock.requests[-1]
    assert (received.path, received.query) == (
        f"/{version}/models/gemini-2.5-flash:streamGenerateContent",
        "alt=sse",
    )
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["input_tokens"], event["output_tokens"], event["estimated"]) == (PROMPT_TOKENS, 16, False)
    assert event["cost_micros"] == cost(PROMPT_TOKENS, 16)


def test_stream_without_alt_sse_is_a_json_array_and_metered(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    body = {"contents": [{"parts": [{"text": PROMPT}]}], "generationConfig": {"maxOutputTokens": 5}}
    response = httpx.post(
        gateway.base + "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        json=body,
        headers={"x-goog-api-key": str(user_key["secret"])},
    )
    assert response.status_code == 200 and response.text.startswith("[{")
    chunks = json.loads(response.text)
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == reply_text(5)
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["output_tokens"], event["estimated"], event["status"]) == (5, False, "ok")


def test_thinking_is_billed_as_output_and_cache_reads_at_the_cached_rate(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    thinking = types.ThinkingConfig(thinking_budget=256, include_thoughts=True)
    config = types.GenerateContentConfig(max_output_tokens=20, thinking_config=thinking)
    with client(gateway, user_key, **{"x-mock-cached-tokens": "2"}) as sdk:
        reply = sdk.models.generate_content(model="gemini-2.5-flash", contents=PROMPT, config=config)
    assert reply.candidates and reply.candidates[0].content and reply.candidates[0].content.parts
    assert [p.thought for p in reply.candidates[0].content.parts] == [True, None]
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["input_tokens"], event["cached_input_tokens"]) == (PROMPT_TOKENS - 2, 2)
    assert (event["output_tokens"], event["reasoning_tokens"]) == (12 + 8, 8)  # 20 = 8 thought + 12 answer
    assert event["cost_micros"] == cost(PROMPT_TOKENS - 2, 20, cached=2)


def test_count_tokens_is_free_and_never_metered(
    sdk: genai.Client, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    counted = sdk.models.count_tokens(model="gemini-2.5-flash", contents=PROMPT)
    assert counted.total_tokens == PROMPT_TOKENS
    assert mock.requests[-1].path.endswith("/models/gemini-2.5-flash:countTokens")
    sdk.models.generate_content(
        model="gemini-2.5-flash", contents=PROMPT, config=types.GenerateContentConfig(max_output_tokens=1)
    )
    (event,) = account.events(str(user_key["id"]), 1)  # the generate call only
    assert event["output_tokens"] == 1
    assert account.key_usage(str(user_key["id"]))["reserved_micros"] == 0


def test_embed_content_is_metered_by_input(
    sdk: genai.Client, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    result = sdk.models.embed_content(model="gemini-embedding-001", contents=["a", "bb", "ccc"])
    assert result.embeddings is not None and len(result.embeddings) == 3
    assert mock.requests[-1].path.endswith("/models/gemini-embedding-001:batchEmbedContents")
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["model"], event["input_tokens"], event["output_tokens"]) == ("gemini-embedding-001", 3, 0)
    assert event["estimated"] is False and event["cost_micros"] == -(-3 * EMBED_IN // 1_000_000)


def test_embed_content_without_reported_usage_bills_the_estimate(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    raw = json.dumps({"content": {"parts": [{"text": "embed me"}]}}).encode()
    response = httpx.post(
        gateway.base + "/v1beta/models/gemini-embedding-001:embedContent",
        content=raw,
        headers={"x-goog-api-key": str(user_key["secret"]), "content-type": "application/json"},
    )
    assert response.status_code == 200 and len(response.json()["embedding"]["values"]) == 8
    (event,) = account.events(str(user_key["id"]), 1)
    assert event["estimated"] is True and event["input_tokens"] == -(-len(raw) // 4)


def test_key_in_the_query_string_is_accepted_and_never_forwarded(
    gateway: Running, user_key: dict[str, object], mock: MockUpstream
) -> None:
    response = httpx.post(
        gateway.base + "/v1beta/models/gemini-2.5-flash:generateContent",
        params={"key": str(user_key["secret"])},
        json={"contents": [{"parts": [{"text": PROMPT}]}], "generationConfig": {"maxOutputTokens": 1}},
    )
    assert response.status_code == 200, response.text
    assert "key=" not in mock.requests[-1].query
    assert_upstream_got_the_provider_key(mock, user_key)


def test_over_cap_is_a_402_client_error_before_anything_goes_upstream(
    gateway: Running, account: Account, mock: MockUpstream
) -> None:
    key = account.mint("capped", max_spend_usd="0.00001")  # 10 micros: one request uses it up
    config = types.GenerateContentConfig(max_output_tokens=20)
    with client(gateway, key) as sdk:
        sdk.models.generate_content(model="gemini-2.5-flash", contents=PROMPT, config=config)
        account.events(str(key["id"]), 1)
        seen = len(mock.requests)
        with pytest.raises(errors.ClientError) as info:
            sdk.models.generate_content(model="gemini-2.5-flash", contents=PROMPT, config=config)
        with pytest.raises(errors.ClientError) as streamed:
            list(sdk.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT, config=config))
    assert len(mock.requests) == seen  # nothing was forwarded
    assert info.value.code == 402 and info.value.status == "RESOURCE_EXHAUSTED"
    assert info.value.message is not None and "Spend cap reached" in info.value.message
    assert streamed.value.code == 402


def test_refusals_are_google_shaped(gateway: Running, account: Account, mock: MockUpstream) -> None:
    seen = len(mock.requests)
    with client(gateway, {"secret": "sg_live_" + "x" * 43}) as sdk, pytest.raises(errors.ClientError) as bad:
        sdk.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    assert (bad.value.code, bad.value.status) == (401, "UNAUTHENTICATED")
    key = account.mint("narrow", allowed_models=["gemini-2.5-flash-lite"])
    with client(gateway, key) as sdk:
        with pytest.raises(errors.ClientError) as unknown:
            sdk.models.generate_content(model="gemini-9-imaginary", contents=PROMPT)
        with pytest.raises(errors.ClientError) as forbidden:
            sdk.models.generate_content(model="gemini-2.5-pro", contents=PROMPT)
    assert (unknown.value.code, unknown.value.status) == (400, "INVALID_ARGUMENT")
    assert (forbidden.value.code, forbidden.value.status) == (403, "PERMISSION_DENIED")
    assert len(mock.requests) == seen


def test_upstream_dying_mid_stream_raises_and_bills_the_chunks_delivered(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    with client(gateway, user_key, **{"x-mock-abort-after": "5"}) as sdk, pytest.raises(errors.APIError):
        for _ in sdk.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT):
            pass
    (event,) = account.events(str(user_key["id"]), 1)
    # Usage is cumulative: the fifth chunk's says five words so far.
    assert (event["status"], event["output_tokens"], event["input_tokens"]) == (
        "upstream_aborted",
        5,
        PROMPT_TOKENS,
    )

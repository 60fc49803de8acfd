"""The fake upstream's Gemini routes and its OpenAI-compatible providers
(path prefixes and usage quirks), driven by google-genai, openai and raw httpx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2  # google-genai's transport
import openai
import pytest
from google import genai
from google.genai import errors, types
from openai.types.chat import ChatCompletionMessageParam

from fakeupstream.gemini import PROMPT_FIELDS
from fakeupstream.server import (
    THINKING_TOKENS,
    MockUpstream,
    count_prompt_tokens,
    reply_text,
    running_mock,
)

GEMINI = "/v1beta/models/gemini-2.5-flash"
CONTENTS: Any = [{"role": "user", "parts": [{"text": "hello there"}]}]  # 11 bytes -> 3 tokens
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
KEY = {"x-goog-api-key": "AIza-test"}


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with running_mock() as server:
        yield server


@pytest.fixture
def raw(mock: MockUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mock.url) as client:
        yield client


def sse_data(text: str) -> list[dict[str, Any]]:
    assert text.endswith("\r\n\r\n")
    return [json.loads(block.removeprefix("data: ")) for block in text.split("\r\n\r\n") if block]


# --- Gemini ------------------------------------------------------------------------------------


def test_gemini_counts_its_prompt_fields() -> None:
    body = {"systemInstruction": {"parts": [{"text": "abcd"}]}, "contents": CONTENTS, "model": "ignored"}
    assert count_prompt_tokens(body, PROMPT_FIELDS) == 4  # 4 + 11 bytes; roles are not counted


@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_google_genai_sdk_round_trip(mock: MockUpstream, version: str) -> None:
    options = types.HttpOptions(base_url=mock.url, api_version=version)
    with genai.Client(api_key="AIza-test", http_options=options) as sdk:
        config = types.GenerateContentConfig(max_output_tokens=5)
        reply = sdk.models.generate_content(model="gemini-2.5-flash", contents="hello there", config=config)
        chunks = list(sdk.models.generate_content_stream(model="gemini-2.5-flash", contents="hello there"))
        counted = sdk.models.count_tokens(model="gemini-2.5-flash", contents="hello there")
        embedded = sdk.models.embed_content(model="gemini-embedding-001", contents=["a", "bb"])
    assert (
        reply.text == reply_text(5) and reply.candidates and reply.candidates[0].finish_reason == "MAX_TOKENS"
    )
    assert reply.usage_metadata is not None and reply.usage_metadata.candidates_token_count == 5
    assert "".join(c.text or "" for c in chunks) == reply_text(16)
    assert chunks[-1].usage_metadata is not None and chunks[-1].usage_metadata.total_token_count == 3 + 16
    assert counted.total_tokens == 3
    assert embedded.embeddings is not None and len(embedded.embeddings) == 2
    assert [r.path for r in mock.requests[-4:]] == [
        f"/{version}/models/gemini-2.5-flash:generateContent",
        f"/{version}/models/gemini-2.5-flash:streamGenerateContent",
        f"/{version}/models/gemini-2.5-flash:countTokens",
        f"/{version}/models/gemini-embedding-001:batchEmbedContents",
    ]


def test_generate_body_is_pretty_json_with_usage(raw: httpx.Client) -> None:
    body = {
        "contents": CONTENTS,
        "generationConfig": {"maxOutputTokens": 20, "thinkingConfig": {"thinkingBudget": 64}},
    }
    response = raw.post(f"{GEMINI}:generateContent", json=body, headers={**KEY, "x-mock-cached-tokens": "2"})
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    assert response.text.startswith('{\n  "candidates": [\n    {\n      "content": {')
    reply = response.json()
    assert list(reply) == ["candidates", "usageMetadata", "modelVersion", "responseId"]
    assert reply["candidates"][0]["content"]["parts"] == [{"text": reply_text(12)}]  # 20 - 8 thinking
    assert reply["usageMetadata"] == {
        "promptTokenCount": 3,
        "candidatesTokenCount": 12,
        "totalTokenCount": 3 + 12 + THINKING_TOKENS,
        "cachedContentTokenCount": 2,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 3}],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 2}],
        "thoughtsTokenCount": THINKING_TOKENS,
    }
    assert reply["modelVersion"] == "gemini-2.5-flash"


def test_stream_sse_form_has_cumulative_usage_and_no_done(raw: httpx.Client) -> None:
    body = {"contents": CONTENTS, "generationConfig": {"maxOutputTokens": 3}}
    response = raw.post(f"{GEMINI}:streamGenerateContent", params={"alt": "sse"}, json=body, headers=KEY)
    assert response.headers["content-type"] == "text/event-stream"
    assert "[DONE]" not in response.text and "event:" not in response.text
    chunks = sse_data(response.text)
    assert [c["usageMetadata"]["candidatesTokenCount"] for c in chunks] == [1, 2, 3]
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None, None, "MAX_TOKENS"]


def test_stream_array_form_arrives_element_by_element(mock: MockUpstream) -> None:
    body = json.dumps({"contents": CONTENTS, "generationConfig": {"maxOutputTokens": 2}}).encode()
    with httpx.Client(base_url=mock.url) as client:
        with client.stream("POST", f"{GEMINI}:streamGenerateContent", content=body, headers=KEY) as response:
            pieces = list(response.iter_raw())
    text = b"".join(pieces).decode()
    assert text.startswith("[{\n") and "\n,\r\n{\n" in text and text.endswith("\n]")
    chunks = json.loads(text)
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == reply_text(2)


def test_thoughts_are_sent_only_when_asked_for(raw: httpx.Client) -> None:
    thinking = {"thinking_budget": 64, "include_thoughts": True}  # the proto spelling google-genai sends
    body = {"contents": CONTENTS, "generationConfig": {"maxOutputTokens": 10, "thinkingConfig": thinking}}
    parts = raw.post(f"{GEMINI}:generateContent", json=body, headers=KEY).json()["candidates"][0]["content"][
        "parts"
    ]
    assert [p.get("thought") for p in parts] == [True, None] and parts[1]["text"] == reply_text(2)


@pytest.mark.parametrize(
    ("headers", "status", "google_status"),
    [
        ({}, 403, "PERMISSION_DENIED"),
        ({"authorization": "Bearer ya29.token"}, 401, "UNAUTHENTICATED"),
        ({**KEY, "x-mock-status": "429"}, 429, "RESOURCE_EXHAUSTED"),
        ({**KEY, "x-mock-status": "500"}, 500, "INTERNAL"),
    ],
)
def test_gemini_errors_are_google_shaped(
    raw: httpx.Client, headers: dict[str, str], status: int, google_status: str
) -> None:
    response = raw.post(f"{GEMINI}:generateContent", json={"contents": CONTENTS}, headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == status and response.json()["error"]["status"] == google_status


def test_gemini_key_in_the_query_and_bad_requests(raw: httpx.Client) -> None:
    assert (
        raw.post(f"{GEMINI}:countTokens", params={"key": "k"}, json={"contents": CONTENTS}).status_code == 200
    )
    missing = raw.post(f"{GEMINI}:generateContent", json={"contents": []}, headers=KEY)
    assert missing.status_code == 400 and missing.json()["error"]["status"] == "INVALID_ARGUMENT"
    unknown = raw.post(f"{GEMINI}:tuneModel", json={}, headers=KEY)
    assert unknown.status_code == 404 and unknown.json()["error"]["status"] == "NOT_FOUND"


def test_embed_content_reports_no_usage_and_batch_does(raw: httpx.Client) -> None:
    single = raw.post(
        "/v1beta/models/gemini-embedding-001:embedContent",
        json={"content": {"parts": [{"text": "hello there"}]}, "outputDimensionality": 4},
        headers=KEY,
    ).json()
    assert list(single) == ["embedding"] and len(single["embedding"]["values"]) == 4
    requests = [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": t}]}}
        for t in ("ab", "hello there")
    ]
    batch = raw.post(
        "/v1beta/models/gemini-embedding-001:batchEmbedContents", json={"requests": requests}, headers=KEY
    )
    assert batch.json()["usageMetadata"]["promptTokenCount"] == 1 + 3


def test_gemini_sdk_raises_on_a_stream_cut_off(mock: MockUpstream) -> None:
    options = types.HttpOptions(base_url=mock.url, headers={"x-mock-abort-after": "2"})
    with (
        genai.Client(api_key="k", http_options=options) as sdk,
        pytest.raises((errors.APIError, httpx2.HTTPError)),
    ):
        list(sdk.models.generate_content_stream(model="gemini-2.5-flash", contents="hello there"))


# --- OpenAI-compatible providers ---------------------------------------------------------------


def compat(mock: MockUpstream, provider: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{mock.url}/{provider}/v1", api_key="sk-test", max_retries=0)


def test_prefix_is_stripped_and_recorded(mock: MockUpstream) -> None:
    with compat(mock, "cerebras") as sdk:
        reply = sdk.chat.completions.create(model="gpt-oss-120b", messages=USER, max_tokens=2)
    received = mock.requests[-1]
    assert (received.provider, received.path) == ("cerebras", "/cerebras/v1/chat/completions")
    assert reply.model_extra is not None and "time_info" in reply.model_extra
    with httpx.Client(base_url=mock.url) as client:
        listed = client.get("/_mock/requests").json()[-1]
        assert listed["provider"] == "cerebras"
        assert client.post("/nowhere/v1/chat/completions", json={}).status_code == 404


def test_deepseek_reports_cache_hits_and_misses(mock: MockUpstream) -> None:
    with compat(mock, "deepseek") as sdk:
        reply = sdk.chat.completions.create(
            model="deepseek-v4-flash",
            messages=USER,
            max_tokens=2,
            extra_headers={"x-mock-cached-tokens": "2"},
        )
    assert reply.usage is not None and reply.usage.model_extra == {
        "prompt_cache_hit_tokens": 2,
        "prompt_cache_miss_tokens": 1,
    }


def test_moonshot_stream_usage_is_in_the_finishing_choice(mock: MockUpstream) -> None:
    with compat(mock, "moonshot") as sdk:
        chunks = list(
            sdk.chat.completions.create(model="kimi-k2.6", messages=USER, stream=True, max_tokens=2)
        )
    last = chunks[-1].choices[0]
    assert last.finish_reason == "length" and last.model_extra is not None
    assert last.model_extra["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
        "cached_tokens": 0,
    }
    assert all(c.usage is None for c in chunks)


def test_mistral_always_sends_usage_and_refuses_stream_options(mock: MockUpstream) -> None:
    with compat(mock, "mistral") as sdk:
        chunks = list(
            sdk.chat.completions.create(
                model="mistral-small-latest", messages=USER, stream=True, max_tokens=2
            )
        )
        assert chunks[-1].choices and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
        with pytest.raises(openai.UnprocessableEntityError) as info:
            sdk.chat.completions.create(
                model="mistral-small-latest",
                messages=USER,
                stream=True,
                stream_options={"include_usage": True},
            )
    assert info.value.body is not None and "stream_options" in str(info.value.body)


def test_xai_counts_reasoning_outside_completion(mock: MockUpstream) -> None:
    with compat(mock, "xai") as sdk:
        reply = sdk.chat.completions.create(model="grok-4-1-fast-reasoning", messages=USER, max_tokens=2)
    usage = reply.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert (usage.completion_tokens, usage.completion_tokens_details.reasoning_tokens) == (2, THINKING_TOKENS)
    assert usage.total_tokens == 3 + 2 + THINKING_TOKENS


def test_minimax_errors_come_back_as_200_with_base_resp(raw: httpx.Client) -> None:
    ok = raw.post(
        "/minimax/v1/chat/completions",
        json={"model": "MiniMax-M2.7", "messages": USER},
        headers={"authorization": "Bearer k"},
    ).json()
    assert ok["base_resp"] == {"status_code": 0, "status_msg": ""}
    for headers, code in [({"authorization": "Bearer k", "x-mock-status": "402"}, 1008), ({}, 2049)]:
        response = raw.post(
            "/minimax/v1/chat/completions", json={"model": "MiniMax-M2.7", "messages": USER}, headers=headers
        )
        assert response.status_code == 200
        assert response.json()["base_resp"]["status_code"] == code and response.json()["choices"] is None

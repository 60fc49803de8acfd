"""The official openai SDK, unchanged but for its base URL, through spendgate."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from fakeupstream.server import MockUpstream, count_prompt_tokens, reply_text
from tests.e2e.conftest import UPSTREAM_OPENAI_KEY, Account, Running

MINI_IN, MINI_CACHED, MINI_OUT = 150_000, 75_000, 600_000  # gpt-4o-mini, micros per Mtok


def cost(inp: int, out: int, cached: int = 0) -> int:
    return -(-((inp - cached) * MINI_IN + cached * MINI_CACHED + out * MINI_OUT) // 1_000_000)


def client(gateway: Running, key: dict[str, object], **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=str(key["secret"]), max_retries=0, **kw)  # type: ignore[arg-type]


MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Say hello to the gateway, please."}
]
PROMPT = count_prompt_tokens({"messages": MESSAGES})


def test_chat_completion_is_metered_exactly(
    gateway: Running, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    with client(gateway, user_key) as sdk:
        reply = sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=12)
    assert reply.choices[0].message.content == reply_text(12)
    assert reply.usage is not None and reply.usage.prompt_tokens == PROMPT
    (event,) = account.events(str(user_key["id"]), 1)
    assert event["model"] == "gpt-4o-mini" and event["provider"] == "openai" and event["status"] == "ok"
    assert (event["input_tokens"], event["output_tokens"]) == (PROMPT, 12)
    assert event["cost_micros"] == cost(PROMPT, 12) and event["estimated"] is False
    usage = account.key_usage(str(user_key["id"]))
    assert usage["spent_micros"] == event["cost_micros"] and usage["reserved_micros"] == 0

    received = mock.requests[-1]
    assert received.header("authorization") == f"Bearer {UPSTREAM_OPENAI_KEY}"
    assert str(user_key["secret"]) not in json.dumps([list(h) for h in received.headers])


def test_stream_without_usage_option_hides_the_injected_usage_chunk(
    gateway: Running, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    with client(gateway, user_key) as sdk:
        chunks = list(sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply_text(16)
    assert mock.requests[-1].json()["stream_options"] == {"include_usage": True}
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["input_tokens"], event["output_tokens"], event["estimated"]) == (PROMPT, 16, False)


def test_stream_with_usage_option_keeps_the_usage_chunk(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    with client(gateway, user_key) as sdk:
        chunks = list(
            sdk.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert (
        chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
    )
    (event,) = account.events(str(user_key["id"]), 1)
    assert event["cost_micros"] == cost(PROMPT, 16)


def test_async_client_streams_and_provider_prefixed_model(
    gateway: Running, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    async def run() -> str:
        async with openai.AsyncOpenAI(
            base_url=gateway.base + "/v1", api_key=str(user_key["secret"]), max_retries=0
        ) as sdk:
            stream = await sdk.chat.completions.create(
                model="openai/gpt-4o-mini", messages=MESSAGES, stream=True, max_tokens=5
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(run()) == reply_text(5)
    assert mock.requests[-1].json()["model"] == "gpt-4o-mini"
    (event,) = account.events(str(user_key["id"]), 1)
    assert event["output_tokens"] == 5


def test_cached_prompt_tokens_are_priced_at_the_cached_rate(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    with client(gateway, user_key) as sdk:
        sdk.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=3, extra_headers={"x-mock-cached-tokens": "8"}
        )
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["input_tokens"], event["cached_input_tokens"]) == (PROMPT - 8, 8)
    assert event["cost_micros"] == cost(PROMPT, 3, cached=8)


def test_completions_embeddings_responses_and_models(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    key_id = str(user_key["id"])
    with client(gateway, user_key) as sdk:
        legacy = sdk.completions.create(model="gpt-4o-mini", prompt="Once upon a time", max_tokens=4)
        assert legacy.choices[0].text
        vectors = sdk.embeddings.create(model="text-embedding-3-small", input=["a", "bb"])
        assert len(vectors.data) == 2
        answer = sdk.responses.create(model="gpt-4o-mini", input="Hi there", max_output_tokens=6)
        assert answer.output_text == reply_text(6)
        with sdk.responses.stream(
            model="gpt-4o-mini",
            input="Hi there",
            max_output_tokens=50,
            extra_headers={"x-mock-output-tokens": "7"},
        ) as stream:
            final = stream.get_final_response()
        assert final.usage is not None and final.usage.output_tokens == 7
        models = {m.id for m in sdk.models.list()}
    assert {"gpt-4o-mini", "gpt-5.4", "claude-sonnet-4-6"} <= models
    events = account.events(key_id, 4)
    by_model = [(e["model"], e["output_tokens"]) for e in reversed(events)]
    assert by_model == [
        ("gpt-4o-mini", 4),
        ("text-embedding-3-small", 0),
        ("gpt-4o-mini", 6),
        ("gpt-4o-mini", 7),
    ]
    embedding = events[2]
    assert embedding["input_tokens"] == count_prompt_tokens({"input": ["a", "bb"]})
    assert all(not e["estimated"] for e in events)


def test_models_list_is_filtered_by_allowed_models(gateway: Running, account: Account) -> None:
    key = account.mint("narrow", allowed_models=["gpt-4o-mini"])
    with client(gateway, key) as sdk:
        assert [m.id for m in sdk.models.list()] == ["gpt-4o-mini"]
        with pytest.raises(openai.PermissionDeniedError) as info:
            sdk.chat.completions.create(model="gpt-5.4", messages=MESSAGES)
    assert info.value.status_code == 403 and "gpt-5.4" in info.value.message


def test_client_headers_pass_through_and_hop_by_hop_do_not(
    gateway: Running, user_key: dict[str, object], mock: MockUpstream
) -> None:
    with client(gateway, user_key, organization="org-123", project="proj-9") as sdk:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=1)
    received = mock.requests[-1]
    assert (
        received.header("openai-organization") == "org-123" and received.header("openai-project") == "proj-9"
    )
    assert received.header("x-stainless-lang") == "python"
    assert received.header("proxy-authorization") is None


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_has_one_date_and_no_server_header(
    gateway: Running, user_key: dict[str, object], mock: MockUpstream, stream: bool
) -> None:
    """The provider's Date is not passed on beside the gateway's own (a response has one), and
    the gateway does not name its server software."""
    response = httpx.post(
        gateway.base + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 1, "stream": stream},
        headers={"Authorization": f"Bearer {user_key['secret']}"},
    )
    assert response.status_code == 200, response.text
    assert len(response.headers.get_list("date")) == 1
    assert "server" not in response.headers
    direct = httpx.post(
        mock.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 1, "stream": stream},
        headers={"Authorization": f"Bearer {UPSTREAM_OPENAI_KEY}"},
    )
    assert direct.headers.get("date")  # the provider does send one


@pytest.mark.parametrize(
    "how",
    [
        {"headers": {"x-api-key": "{k}"}},
        {"headers": {"xi-api-key": "{k}"}},
        {"headers": {"x-goog-api-key": "{k}"}},
        {"headers": {"Authorization": "Token {k}"}},
        {"params": {"key": "{k}"}},
    ],
)
def test_key_accepted_from_every_sdk_header(
    gateway: Running, user_key: dict[str, object], mock: MockUpstream, how: dict[str, dict[str, str]]
) -> None:
    secret = str(user_key["secret"])
    fill = {part: {k: v.format(k=secret) for k, v in values.items()} for part, values in how.items()}
    response = httpx.post(
        gateway.base + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 1},
        **fill,  # type: ignore[arg-type]
    )
    assert response.status_code == 200, response.text
    received = mock.requests[-1]
    assert secret not in received.query and all(secret not in v for _, v in received.headers)

"""The OpenAI-compatible providers (xAI, Qwen, Moonshot, MiniMax, DeepSeek,
Mistral, Cerebras) through spendgate with the official openai SDK: routed by
model name on /v1/chat/completions, each to its own upstream, with its own key,
metered at its own catalog price, with its usage quirks understood."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from controlplane import catalog
from controlplane.money import Price, Units, cost_micros
from fakeupstream.compat import xai_reasoning_tokens
from fakeupstream.server import MockUpstream, count_prompt_tokens, reply_text
from tests.e2e.conftest import UPSTREAM_KEYS, Account, Running

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Say hello to the gateway, please."}
]
PROMPT = count_prompt_tokens({"messages": MESSAGES})
PRICES = {(p.provider, p.model): p for p in catalog.builtin() if p.effective_from_ms == 0}
MODELS = {
    "xai": "grok-4-1-fast-reasoning",
    "qwen": "qwen-plus",
    "moonshot": "kimi-k2.6",
    "minimax": "MiniMax-M2.7",
    "deepseek": "deepseek-v4-flash",
    "mistral": "mistral-small-latest",
    "cerebras": "gpt-oss-120b",
}


def cost(event: dict[str, object], price: Price, inp: int, out: int, cached: int = 0) -> int:
    """What the provider charges, at the event's time (DeepSeek's peak hours cost more)."""
    units = Units(input_tokens=inp, output_tokens=out, cached_input_tokens=cached)
    return cost_micros(units, price, int(event["ts_ms"]))  # type: ignore[call-overload]


def client(gateway: Running, key: dict[str, object]) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=str(key["secret"]), max_retries=0)


def assert_routed(mock: MockUpstream, provider: str, key: dict[str, object]) -> None:
    received = mock.requests[-1]
    assert (received.provider, received.path) == (provider, f"/{provider}/v1/chat/completions")
    assert received.header("authorization") == f"Bearer {UPSTREAM_KEYS[provider]}"
    assert str(key["secret"]) not in json.dumps([received.query, *map(list, received.headers)])


@pytest.mark.parametrize("provider", sorted(MODELS))
def test_chat_is_routed_by_model_and_metered_at_the_provider_price(
    gateway: Running, account: Account, user_key: dict[str, object], mock: MockUpstream, provider: str
) -> None:
    model = MODELS[provider]
    with client(gateway, user_key) as sdk:
        reply = sdk.chat.completions.create(model=model, messages=MESSAGES, max_tokens=12)
    assert reply.choices[0].message.content == reply_text(12)
    assert_routed(mock, provider, user_key)
    (event,) = account.events(str(user_key["id"]), 1)
    thought = xai_reasoning_tokens(model) if provider == "xai" else 0
    assert (event["provider"], event["model"], event["status"]) == (provider, model, "ok")
    assert (event["input_tokens"], event["output_tokens"]) == (PROMPT, 12 + thought)
    assert event["cost_micros"] == cost(event, PRICES[provider, model], PROMPT, 12 + thought)
    assert event["estimated"] is False


@pytest.mark.parametrize("provider", sorted(MODELS))
def test_streams_are_metered_and_clients_see_what_they_asked_for(
    gateway: Running, account: Account, user_key: dict[str, object], mock: MockUpstream, provider: str
) -> None:
    model = MODELS[provider]
    with client(gateway, user_key) as sdk:
        chunks = list(
            sdk.chat.completions.create(
                model=f"{provider}/{model}", messages=MESSAGES, stream=True, max_tokens=7
            )
        )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply_text(7)
    assert_routed(mock, provider, user_key)
    sent = mock.requests[-1].json()
    assert sent["model"] == model  # "provider/model" becomes the provider's own name
    if provider == "mistral":
        # Mistral refuses stream_options (422), so none is injected; its finishing chunk carries
        # usage anyway, and since the client did not get that chunk injected, it is not stripped.
        assert "stream_options" not in sent
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    else:
        assert sent["stream_options"] == {"include_usage": True}
        assert all(c.usage is None for c in chunks)  # the injected usage chunk was removed
    (event,) = account.events(str(user_key["id"]), 1)
    thought = xai_reasoning_tokens(model) if provider == "xai" else 0
    assert (event["output_tokens"], event["estimated"], event["status"]) == (7 + thought, False, "ok")


@pytest.mark.parametrize("provider", ["deepseek", "moonshot", "qwen", "xai", "cerebras"])
def test_cache_hits_are_billed_at_the_cached_rate(
    gateway: Running, account: Account, user_key: dict[str, object], provider: str
) -> None:
    model = MODELS[provider]
    with client(gateway, user_key) as sdk:
        sdk.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=3, extra_headers={"x-mock-cached-tokens": "4"}
        )
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["input_tokens"], event["cached_input_tokens"]) == (PROMPT - 4, 4)
    thought = xai_reasoning_tokens(model) if provider == "xai" else 0
    assert event["cost_micros"] == cost(event, PRICES[provider, model], PROMPT - 4, 3 + thought, cached=4)


def test_xai_reasoning_counted_outside_completion_is_billed_once_as_output(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    with client(gateway, user_key) as sdk:
        reasoning = sdk.chat.completions.create(
            model="grok-4-1-fast-reasoning", messages=MESSAGES, max_tokens=5
        )
        plain = sdk.chat.completions.create(
            model="grok-4-1-fast-non-reasoning", messages=MESSAGES, max_tokens=5
        )
    assert (
        reasoning.usage is not None and reasoning.usage.completion_tokens == 5
    )  # xAI's own count excludes it
    later, earlier = account.events(str(user_key["id"]), 2)
    assert (earlier["output_tokens"], earlier["reasoning_tokens"]) == (5 + 8, 8)
    assert (later["output_tokens"], later["reasoning_tokens"]) == (5, 0)
    assert plain.usage is not None and plain.usage.total_tokens == PROMPT + 5


def test_minimax_error_inside_a_200_costs_nothing(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    response = httpx.post(
        gateway.base + "/v1/chat/completions",
        json={"model": MODELS["minimax"], "messages": MESSAGES, "max_tokens": 5},
        headers={"Authorization": f"Bearer {user_key['secret']}", "x-mock-status": "402"},
    )
    assert response.status_code == 200 and response.json()["base_resp"]["status_code"] == 1008
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["cost_micros"], event["output_tokens"], event["input_tokens"]) == (0, 0, 0)
    assert account.key_usage(str(user_key["id"]))["reserved_micros"] == 0


def test_mistral_stream_options_from_the_client_pass_through_and_its_422_costs_nothing(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    with client(gateway, user_key) as sdk, pytest.raises(openai.UnprocessableEntityError):
        sdk.chat.completions.create(
            model=MODELS["mistral"],
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["cost_micros"], event["status"], event["http_status"]) == (0, "upstream_error", 422)


def test_moonshot_stream_usage_inside_the_choice_is_metered(
    gateway: Running, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    body = {"model": MODELS["moonshot"], "messages": MESSAGES, "stream": True, "max_tokens": 4}
    headers = {"Authorization": f"Bearer {user_key['secret']}"}
    with httpx.stream("POST", gateway.base + "/v1/chat/completions", json=body, headers=headers) as response:
        raw = b"".join(response.iter_bytes())
    assert b'"usage":{"prompt_tokens"' in raw and b'"choices":[]' not in raw
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["input_tokens"], event["output_tokens"], event["estimated"]) == (PROMPT, 4, False)


def test_over_cap_is_402_before_the_provider_is_called(
    gateway: Running, account: Account, mock: MockUpstream
) -> None:
    key = account.mint("capped", max_spend_usd=0)
    seen = len(mock.requests)
    with client(gateway, key) as sdk, pytest.raises(openai.APIStatusError) as info:
        sdk.chat.completions.create(model=MODELS["deepseek"], messages=MESSAGES)
    assert info.value.status_code == 402 and len(mock.requests) == seen

"""The official anthropic SDK, unchanged but for its base URL, through spendgate."""

from __future__ import annotations

import asyncio

import anthropic
import pytest
from anthropic.types import MessageParam, TextBlockParam, ToolParam

from fakeupstream.server import THINKING_TOKENS, MockUpstream, count_prompt_tokens, reply_text
from tests.e2e.conftest import UPSTREAM_ANTHROPIC_KEY, Account, Running

IN, WRITE, READ, OUT = 3_000_000, 3_750_000, 300_000, 15_000_000  # claude-sonnet-4-6, micros per Mtok
MESSAGES: list[MessageParam] = [{"role": "user", "content": "Write a haiku about spend caps."}]
PROMPT = count_prompt_tokens({"messages": MESSAGES})


def cost(inp: int, out: int, read: int = 0, write: int = 0) -> int:
    return -(-(inp * IN + out * OUT + read * READ + write * WRITE) // 1_000_000)


def client(gateway: Running, key: dict[str, object]) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base, api_key=str(key["secret"]), max_retries=0)


def test_message_is_metered_and_the_provider_key_injected(
    gateway: Running, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    with client(gateway, user_key) as sdk:
        message = sdk.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES)
    assert message.content[0].type == "text" and message.content[0].text == reply_text(10)
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["provider"], event["input_tokens"], event["output_tokens"]) == ("anthropic", PROMPT, 10)
    assert event["cost_micros"] == cost(PROMPT, 10)
    received = mock.requests[-1]
    assert received.header("x-api-key") == UPSTREAM_ANTHROPIC_KEY and received.header("authorization") is None
    assert received.header("anthropic-version")


def test_stream_with_thinking_and_beta_header(
    gateway: Running, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    with (
        client(gateway, user_key) as sdk,
        sdk.messages.stream(
            model="claude-sonnet-4-6",
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=MESSAGES,
            extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14", "x-mock-output-tokens": "6"},
        ) as stream,
    ):
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.usage.output_tokens == 6 + THINKING_TOKENS
    assert mock.requests[-1].header("anthropic-beta") == "interleaved-thinking-2025-05-14"
    (event,) = account.events(str(user_key["id"]), 1)
    assert event["output_tokens"] == 6 + THINKING_TOKENS and event["cost_micros"] == cost(
        PROMPT, 6 + THINKING_TOKENS
    )


def test_prompt_caching_meters_writes_and_reads_at_their_own_prices(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    system: list[TextBlockParam] = [
        {
            "type": "text",
            "text": "You are a meticulous billing assistant. " * 20,
            "cache_control": {"type": "ephemeral"},
        }
    ]
    with client(gateway, user_key) as sdk:
        first = sdk.messages.create(model="claude-sonnet-4-6", max_tokens=4, system=system, messages=MESSAGES)
        second = sdk.messages.create(
            model="claude-sonnet-4-6", max_tokens=4, system=system, messages=MESSAGES
        )
    assert first.usage.cache_creation_input_tokens and not first.usage.cache_read_input_tokens
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    newest, oldest = account.events(str(user_key["id"]), 2)
    assert oldest["cache_write_tokens"] == first.usage.cache_creation_input_tokens
    assert newest["cached_input_tokens"] == second.usage.cache_read_input_tokens
    assert oldest["cost_micros"] == cost(first.usage.input_tokens, 4, write=oldest["cache_write_tokens"])
    assert newest["cost_micros"] == cost(second.usage.input_tokens, 4, read=newest["cached_input_tokens"])
    assert newest["cost_micros"] < oldest["cost_micros"]


def test_tool_use_streams_through_async_client(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    tools: list[ToolParam] = [
        {
            "name": "get_weather",
            "description": "Weather",
            "input_schema": {"type": "object", "properties": {}},
        }
    ]

    async def run() -> anthropic.types.Message:
        async with anthropic.AsyncAnthropic(
            base_url=gateway.base, api_key=str(user_key["secret"]), max_retries=0
        ) as sdk:
            async with sdk.messages.stream(
                model="claude-sonnet-4-6",
                max_tokens=64,
                tools=tools,
                tool_choice={"type": "any"},
                messages=MESSAGES,
            ) as stream:
                return await stream.get_final_message()

    final = asyncio.run(run())
    assert final.content[-1].type == "tool_use" and final.stop_reason == "tool_use"
    (event,) = account.events(str(user_key["id"]), 1)
    assert event["output_tokens"] == final.usage.output_tokens


def test_count_tokens_is_free(
    gateway: Running, account: Account, user_key: dict[str, object], mock: MockUpstream
) -> None:
    with client(gateway, user_key) as sdk:
        counted = sdk.messages.count_tokens(model="claude-sonnet-4-6", messages=MESSAGES)
        sdk.messages.create(model="claude-sonnet-4-6", max_tokens=2, messages=MESSAGES)
    assert counted.input_tokens == PROMPT
    (event,) = account.events(str(user_key["id"]), 1)  # only the message, not the count
    assert event["output_tokens"] == 2


def test_errors_come_in_anthropics_shape(gateway: Running, account: Account, mock: MockUpstream) -> None:
    key = account.mint("tiny", max_spend_usd="0.000001", allowed_models=["claude-sonnet-4-6"])
    with client(gateway, key) as sdk:
        sdk.messages.create(model="claude-sonnet-4-6", max_tokens=1, messages=MESSAGES)
        account.events(str(key["id"]), 1)
        seen = len(mock.requests)
        with pytest.raises(anthropic.APIStatusError) as over:
            sdk.messages.create(model="claude-sonnet-4-6", max_tokens=1, messages=MESSAGES)
        assert over.value.status_code == 402 and len(mock.requests) == seen
        assert over.value.body["error"]["type"] == "billing_error"  # type: ignore[index]
        with pytest.raises(anthropic.PermissionDeniedError):
            sdk.messages.create(model="claude-haiku-4-5", max_tokens=1, messages=MESSAGES)
        with pytest.raises(anthropic.BadRequestError) as unknown:
            sdk.messages.create(model="claude-nonexistent", max_tokens=1, messages=MESSAGES)
        assert "claude-nonexistent" in str(unknown.value)
    with anthropic.Anthropic(base_url=gateway.base, api_key="sg_live_bogus", max_retries=0) as bad:
        with pytest.raises(anthropic.AuthenticationError):
            bad.messages.create(model="claude-sonnet-4-6", max_tokens=1, messages=MESSAGES)
    assert len(mock.requests) == seen


def test_upstream_errors_pass_through_unchanged_and_cost_nothing(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    with client(gateway, user_key) as sdk:
        with pytest.raises(anthropic.RateLimitError) as info:
            sdk.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=1,
                messages=MESSAGES,
                extra_headers={"x-mock-status": "429"},
            )
    assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["status"], event["http_status"], event["cost_micros"]) == ("upstream_error", 429, 0)
    assert account.key_usage(str(user_key["id"]))["reserved_micros"] == 0

"""Price structures providers actually charge, billed exactly through the official SDKs
and the fake provider: a prompt-length tier, time-of-day prices, one-hour cache writes,
per-search fees. Each expected figure is computed here from the provider's published
list price, not read back from the catalog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anthropic
import openai
from google import genai
from google.genai import types

from clients.client import ControlPlaneClient
from fakeupstream.gemini import PROMPT_FIELDS
from fakeupstream.server import count_prompt_tokens
from spendgate.v1 import usage_pb2
from tests.e2e.conftest import Account, Running


def micros(*terms: tuple[int, int]) -> int:
    """ceil(Σ units × micro-USD per million / 1e6)."""
    return -(-sum(units * rate for units, rate in terms) // 1_000_000)


def test_a_300k_token_gemini_pro_prompt_is_billed_at_the_long_context_rate(
    gateway: Running, account: Account
) -> None:
    """Gemini 2.5 Pro charges $2.50/$15 per Mtok for every token of a prompt over 200k
    (against $1.25/$10 below): billing it at the base rate would be half the invoice."""
    key = account.mint("long-context", max_spend_usd=20)
    text = "Summarise the ledger. " * 55_000  # ~300k tokens at the fake provider's 4 bytes a token
    contents = [{"parts": [{"text": text}]}]
    prompt = count_prompt_tokens({"contents": contents}, PROMPT_FIELDS)
    assert 290_000 < prompt < 310_000
    options = types.HttpOptions(base_url=gateway.base, headers={"x-mock-output-tokens": "10"})
    client = genai.Client(api_key=str(key["secret"]), http_options=options)
    reply = client.models.generate_content(
        model="gemini-2.5-pro", contents=text, config=types.GenerateContentConfig(max_output_tokens=50)
    )
    assert reply.usage_metadata is not None and reply.usage_metadata.prompt_token_count == prompt
    (event,) = account.events(str(key["id"]), 1)
    assert event["price_rules"] == "input>200000"
    assert event["cost_micros"] == micros((prompt, 2_500_000), (10, 15_000_000))
    short = client.models.generate_content(model="gemini-2.5-pro", contents="Hi")
    assert short.usage_metadata is not None
    newest, _ = account.events(str(key["id"]), 2)
    small = short.usage_metadata.prompt_token_count or 0
    assert newest["price_rules"] == "" and newest["cost_micros"] == micros(
        (small, 1_250_000), (10, 10_000_000)
    )


def test_deepseek_bills_the_peak_rate_in_its_peak_hours_and_off_peak_otherwise(
    gateway: Running, account: Account
) -> None:
    """DeepSeek V4 Pro: $1.32/$3.96 per Mtok at 01:00-04:00 and 06:00-10:00 UTC, $0.66/$1.98
    otherwise. A request is priced by when it started, which the data plane reports: one
    through the SDK now, and settlements started at 02:00 and at 12:00 UTC."""
    key = account.mint("deepseek", max_spend_usd=20)
    sdk = openai.OpenAI(base_url=gateway.base + "/v1", api_key=str(key["secret"]), max_retries=0)
    messages = [{"role": "user", "content": "What does the ledger say?"}]
    sdk.chat.completions.create(model="deepseek-v4-pro", messages=messages, max_tokens=12)  # type: ignore[arg-type]
    (event,) = account.events(str(key["id"]), 1)
    prompt = count_prompt_tokens({"messages": messages})
    hour = datetime.fromtimestamp(int(event["ts_ms"]) / 1000, UTC).hour  # type: ignore[call-overload]
    peak = 1 <= hour < 4 or 6 <= hour < 10
    rates = (1_320_000, 3_960_000) if peak else (660_000, 1_980_000)
    assert event["cost_micros"] == micros((prompt, rates[0]), (12, rates[1]))
    assert (event["price_rules"] != "") is peak

    # (Tomorrow: the gateway's catalog rows begin when it first started.)
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    with ControlPlaneClient(gateway.grpc, gateway.service_token) as service:
        for at_hour, cost in ((2, 1_320_000 + 3_960_000), (12, 660_000 + 1_980_000)):
            started = int(day.replace(hour=at_hour).timestamp() * 1000)
            settled = service.settle(
                usage_pb2.SettleRequest(
                    request_id=f"deepseek-at-{at_hour}",
                    key_id=str(key["id"]),
                    provider="deepseek",
                    model="deepseek-v4-pro",
                    units=usage_pb2.Units(input_tokens=1_000_000, output_tokens=1_000_000),
                    started_ms=started,
                )
            ).event
            assert settled.cost_micros == cost
            assert settled.price_rules == ("01:00-04:00UTC" if at_hour == 2 else "")


def test_an_anthropic_one_hour_cache_write_costs_twice_the_input_rate(
    gateway: Running, account: Account
) -> None:
    """Claude Sonnet 4.6: 5-minute cache writes $3.75, 1-hour writes $6 per Mtok (2x input)."""
    key = account.mint("hour-cache", max_spend_usd=20)
    system = [
        {
            "type": "text",
            "text": "You are a meticulous billing assistant. " * 40,
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    messages = [{"role": "user", "content": "Hi"}]
    with anthropic.Anthropic(base_url=gateway.base, api_key=str(key["secret"]), max_retries=0) as sdk:
        reply = sdk.messages.create(model="claude-sonnet-4-6", max_tokens=4, system=system, messages=messages)  # type: ignore[arg-type]
    creation = reply.usage.cache_creation
    assert (
        creation is not None and creation.ephemeral_1h_input_tokens and not creation.ephemeral_5m_input_tokens
    )
    (event,) = account.events(str(key["id"]), 1)
    assert (event["cache_write_1h_tokens"], event["cache_write_tokens"]) == (
        creation.ephemeral_1h_input_tokens,
        0,
    )
    assert event["cost_micros"] == micros(
        (reply.usage.input_tokens, 3_000_000),
        (creation.ephemeral_1h_input_tokens, 6_000_000),
        (4, 15_000_000),
    )


def test_web_searches_are_billed_per_search(gateway: Running, account: Account) -> None:
    """Anthropic: $10 per 1,000 web searches. Gemini 2.5 Pro: $35 per 1,000 grounded prompts,
    however many queries the prompt ran. Billed as $0 before this."""
    key = account.mint("searching", max_spend_usd=50)
    tools = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]
    messages = [{"role": "user", "content": "Who won?"}]
    with anthropic.Anthropic(base_url=gateway.base, api_key=str(key["secret"]), max_retries=0) as sdk:
        reply = sdk.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=4,
            tools=tools,  # type: ignore[arg-type]
            messages=messages,  # type: ignore[arg-type]
            extra_headers={"x-mock-web-searches": "3"},
        )
    assert reply.usage.server_tool_use is not None and reply.usage.server_tool_use.web_search_requests == 3
    (event,) = account.events(str(key["id"]), 1)
    assert event["web_searches"] == 3
    tokens = micros((reply.usage.input_tokens, 3_000_000), (4, 15_000_000))
    assert event["cost_micros"] == tokens + 3 * 10_000

    options = types.HttpOptions(
        base_url=gateway.base, headers={"x-mock-web-searches": "2", "x-mock-output-tokens": "5"}
    )
    client = genai.Client(api_key=str(key["secret"]), http_options=options)
    grounded = client.models.generate_content(
        model="gemini-2.5-pro",
        contents="Who won?",
        config=types.GenerateContentConfig(tools=[types.Tool(google_search=types.GoogleSearch())]),
    )
    assert grounded.usage_metadata is not None
    newest, _ = account.events(str(key["id"]), 2)
    assert newest["web_searches"] == 1  # one grounded prompt, two queries
    prompt = grounded.usage_metadata.prompt_token_count or 0
    assert newest["cost_micros"] == micros((prompt, 1_250_000), (5, 10_000_000)) + 35_000

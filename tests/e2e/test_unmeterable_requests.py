"""Requests the gateway would otherwise bill 0 or too little (issue 15), through `spendgate up`
with the official openai SDK: a background Responses run is refused before anything is reserved
or forwarded, and a request naming both `max_tokens` and `max_completion_tokens` reserves the
larger, since a compatible provider such as DeepSeek generates up to `max_tokens`."""

from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from fakeupstream.server import MockUpstream
from tests.e2e.conftest import Account, Running

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name a colour."}]


def sdk(gateway: Running, key: dict[str, object]) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=str(key["secret"]), max_retries=0)


def test_a_background_response_is_a_400_and_nothing_is_forwarded_reserved_or_billed(
    gateway: Running, account: Account, mock: MockUpstream
) -> None:
    key = account.mint("background", max_spend_usd=5)
    with sdk(gateway, key) as client:
        seen = len(mock.requests)
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(model="gpt-4o-mini", input="Write a long essay.", background=True)
        assert len(mock.requests) == seen  # nothing reached the provider
        usage = account.key_usage(str(key["id"]))
        assert (usage["spent_micros"], usage["reserved_micros"]) == (0, 0)
        assert account.events(str(key["id"]), 0) == []
        # `background: false` is an ordinary, metered request.
        answer = client.responses.create(
            model="gpt-4o-mini", input="Write a long essay.", background=False, max_output_tokens=20
        )
    assert answer.status == "completed" and len(mock.requests) == seen + 1
    (event,) = account.events(str(key["id"]), 1)
    assert int(str(event["cost_micros"])) > 0
    error = info.value.body
    assert isinstance(error, dict)
    assert (error["type"], error["param"]) == ("invalid_request_error", "background")
    assert "cannot be metered by this gateway" in error["message"]
    assert "without `background`" in error["message"]


def test_a_background_response_is_refused_before_the_cap_is_consulted(
    gateway: Running, account: Account, mock: MockUpstream
) -> None:
    """On a key whose cap admits nothing, the refusal is still the 400: it comes before the Reserve."""
    key = account.mint("background-tiny", max_spend_usd="0.000001", strict=True)
    with sdk(gateway, key) as client:
        seen = len(mock.requests)
        with pytest.raises(openai.BadRequestError):
            client.responses.create(model="gpt-4o-mini", input="hi", background=True)
        with pytest.raises(openai.APIStatusError) as info:
            client.responses.create(model="gpt-4o-mini", input="hi")
    assert info.value.status_code == 402 and len(mock.requests) == seen


def test_both_output_limits_reserve_the_larger_on_a_compatible_provider(
    gateway: Running, account: Account, mock: MockUpstream
) -> None:
    """deepseek-v4-flash: $0.60 / M output off-peak, $1.20 at peak. 10 output tokens fit a 1,000-micro
    cap whole; 10,000 (6,000 micros or more) do not. DeepSeek honours `max_tokens`, so a request with
    `max_completion_tokens: 10` beside `max_tokens: 10000` may generate 10,000 tokens."""
    key = account.mint("both-limits", max_spend_usd="0.001", strict=True)
    with sdk(gateway, key) as client:
        seen = len(mock.requests)
        for completion, max_tokens in ((10, 10_000), (10_000, 10)):  # either one the larger
            with pytest.raises(openai.APIStatusError) as info:
                client.chat.completions.create(
                    model="deepseek-v4-flash",
                    messages=MESSAGES,
                    max_completion_tokens=completion,
                    max_tokens=max_tokens,
                )
            assert info.value.status_code == 402, (completion, max_tokens)
            assert info.value.body["code"] == "spend_cap_exceeded"  # type: ignore[index]
        assert len(mock.requests) == seen  # nothing was forwarded
        # The smaller limit alone fits the cap whole: the refusal was the larger limit's.
        client.chat.completions.create(
            model="deepseek-v4-flash",
            messages=MESSAGES,
            max_completion_tokens=10,
        )
    assert len(mock.requests) == seen + 1

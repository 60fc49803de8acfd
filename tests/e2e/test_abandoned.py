"""Requests whose client leaves, or whose upstream breaks, before the provider's usage
arrives (issue 15.1, 15.3): the provider did the work, so the gateway bills it, from
the provider's own counts when it can still read them, else from the reservation."""

from __future__ import annotations

from typing import cast

import anthropic
import httpx
import openai
import pytest

from fakeupstream.server import count_prompt_tokens
from tests.e2e.conftest import Account, Running
from tests.e2e.test_caps_and_errors import MESSAGES, sdk


def test_a_json_answer_whose_client_timed_out_is_billed_in_full(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    with sdk(gateway, user_key) as client, pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.3).chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=50,
            # the head at once, the body after the client gave up (its read timeout)
            extra_headers={"x-mock-chunk-delay-ms": "1200", "x-mock-output-tokens": "40"},
        )
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["output_tokens"], event["estimated"]) == (40, False)  # the provider's own counts
    assert event["input_tokens"] == count_prompt_tokens({"messages": MESSAGES})
    assert cast(int, event["cost_micros"]) > 0
    assert account.key_usage(str(user_key["id"]))["reserved_micros"] == 0


def test_a_stream_its_client_left_is_drained_and_billed_from_the_providers_counts(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, "max_tokens": 200}
    headers = {
        "Authorization": f"Bearer {user_key['secret']}",
        "x-mock-output-tokens": "120",
        "x-mock-chunk-delay-ms": "5",
    }
    with httpx.stream("POST", gateway.base + "/v1/chat/completions", json=body, headers=headers) as response:
        for n, _ in enumerate(response.iter_lines()):
            if n >= 6:
                break  # "stop generating" after a few words
    (event,) = account.events(str(user_key["id"]), 1)
    assert event["status"] == "client_disconnected"
    assert (event["output_tokens"], event["estimated"]) == (120, False)  # all the provider generated
    assert account.key_usage(str(user_key["id"]))["reserved_micros"] == 0


def test_a_json_answer_cut_mid_body_is_billed_at_the_reservations_output_bound(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    # The provider sends a JSON answer once it has generated all of it: a cut body was paid for.
    with sdk(gateway, user_key) as client, pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=70,
            extra_headers={"x-mock-abort-after": "30", "x-mock-output-tokens": "60"},
        )
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["status"], event["estimated"]) == ("upstream_aborted", True)
    assert event["output_tokens"] == 70  # max_tokens: all the reservation allowed


@pytest.mark.parametrize(
    "request_fields",
    [
        {"model": "o3-mini", "max_completion_tokens": 900},  # thinks by default, shows none of it
        {"model": "gpt-4o-mini", "max_tokens": 900, "reasoning_effort": "high"},  # asked to think
    ],
)
def test_a_reasoning_stream_cut_early_is_billed_for_its_hidden_thinking(
    gateway: Running, account: Account, user_key: dict[str, object], request_fields: dict[str, object]
) -> None:
    with sdk(gateway, user_key) as client, pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(  # type: ignore[call-overload]
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-mock-abort-after": "3", "x-mock-output-tokens": "100"},
            **request_fields,
        ):
            pass
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["status"], event["estimated"]) == ("upstream_aborted", True)
    assert event["output_tokens"] == 900  # not the two or three visible words


def test_a_claude_stream_with_thinking_cut_early_is_billed_for_the_thinking(
    gateway: Running, account: Account, user_key: dict[str, object]
) -> None:
    client = anthropic.Anthropic(base_url=gateway.base, api_key=str(user_key["secret"]), max_retries=0)
    with pytest.raises(anthropic.APIError):
        with client.messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": "Count to ten."}],
            extra_headers={"x-mock-abort-after": "3", "x-mock-output-tokens": "100"},
        ) as stream:
            for _ in stream:
                pass
    (event,) = account.events(str(user_key["id"]), 1)
    assert (event["status"], event["estimated"]) == ("upstream_aborted", True)
    assert event["output_tokens"] == 2048

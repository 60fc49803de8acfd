"""What a request reserves before it is forwarded, as an OpenAI SDK user sees it: several
answers multiply the output bound, an image by URL costs its per-image maximum, and a stored
conversation cannot be bounded at all (estimate.py)."""

from __future__ import annotations

import openai
import pytest

from fakeupstream.server import MockUpstream
from tests.e2e.conftest import Account, Running

MESSAGES = [{"role": "user", "content": "Name a colour."}]
# gpt-4o-mini: $0.15 / M input, $0.60 / M output. One answer of 1,000 tokens is 600 micros,
# so this cap is worth two of them and the prompt's bytes (~100 micros of slack).
MAX_TOKENS = 1_000
TWO_ANSWERS_CAP = "0.0013"
TWO_ANSWERS_CAP_MICROS = 1_300


def sdk(gateway: Running, key: dict[str, object]) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=str(key["secret"]), max_retries=0)


def test_n_choices_on_a_strict_key_are_refused_when_all_of_them_do_not_fit(
    gateway: Running, account: Account, mock: MockUpstream
) -> None:
    key = account.mint("strict-n", max_spend_usd=TWO_ANSWERS_CAP, strict=True)
    with sdk(gateway, key) as client:
        seen = len(mock.requests)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=MAX_TOKENS,
                n=8,
            )
        assert info.value.status_code == 402
        assert info.value.body["code"] == "spend_cap_exceeded"  # type: ignore[index]
        assert len(mock.requests) == seen  # nothing was forwarded
        # Two answers fit the cap whole.
        answer = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=MAX_TOKENS,
            n=2,
        )
    assert [choice.index for choice in answer.choices] == [0, 1]
    assert answer.usage is not None and answer.usage.completion_tokens == 2 * 16


def test_n_choices_on_a_plain_key_overspend_by_at_most_one_estimate_and_bill_every_choice(
    gateway: Running, account: Account, mock: MockUpstream
) -> None:
    key = account.mint("plain-n", max_spend_usd=TWO_ANSWERS_CAP)
    long_answers = {"x-mock-output-tokens": str(MAX_TOKENS)}
    with sdk(gateway, key) as client:
        answer = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=MAX_TOKENS,
            n=8,
            extra_headers=long_answers,
        )
        assert len(answer.choices) == 8
        (event,) = account.events(str(key["id"]), 1)
        seen = len(mock.requests)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=MAX_TOKENS,
                extra_headers=long_answers,
            )
    assert info.value.status_code == 402 and len(mock.requests) == seen
    assert event["output_tokens"] == 8 * MAX_TOKENS  # every choice is billed
    usage = account.key_usage(str(key["id"]))
    # Admitted while under the cap, the request reserved all eight answers (4,800 micros of
    # output and under 1,000 bytes of prompt): past the cap by no more than that one estimate.
    one_estimate = 8 * MAX_TOKENS * 600_000 // 1_000_000 + 1_000 * 150_000 // 1_000_000
    assert TWO_ANSWERS_CAP_MICROS < int(str(usage["spent_micros"])) <= TWO_ANSWERS_CAP_MICROS + one_estimate
    assert usage["reserved_micros"] == 0


def test_image_by_url_reserves_its_maximum_before_anything_is_forwarded(
    gateway: Running, account: Account, mock: MockUpstream
) -> None:
    # 1,000 micros: the text alone reserves ~40; an image for gpt-4o-mini may bill 48,169
    # tokens (~7,200 micros), however small the file behind the URL.
    key = account.mint("strict-image", max_spend_usd="0.001", strict=True)
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    with sdk(gateway, key) as client:
        seen = len(mock.requests)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}],  # type: ignore[list-item,misc]
                max_tokens=10,
            )
        assert info.value.status_code == 402 and len(mock.requests) == seen
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "What is this?"}],
            max_tokens=10,
        )
    assert len(mock.requests) == seen + 1  # the same text without the image fits


def test_previous_response_id_on_a_strict_key_is_a_400_and_nothing_is_forwarded(
    gateway: Running, account: Account, mock: MockUpstream
) -> None:
    strict = account.mint("strict-stored", max_spend_usd=5, strict=True)
    with sdk(gateway, strict) as client:
        seen = len(mock.requests)
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(
                model="gpt-4o-mini", input="And then?", previous_response_id="resp_123", max_output_tokens=50
            )
    assert len(mock.requests) == seen
    error = info.value.body
    assert isinstance(error, dict)
    assert (error["code"], error["type"], error["param"]) == (
        "input_not_bounded",
        "invalid_request_error",
        "previous_response_id",
    )
    assert "`previous_response_id`" in error["message"] and "strict" in error["message"]
    # A key without strict admits it, reserving SPENDGATE_MAX_REFERENCED_INPUT_TOKENS of input.
    plain = account.mint("plain-stored", max_spend_usd=5)
    with sdk(gateway, plain) as client:
        answer = client.responses.create(
            model="gpt-4o-mini", input="And then?", previous_response_id="resp_123", max_output_tokens=50
        )
    assert answer.previous_response_id == "resp_123" and len(mock.requests) == seen + 1

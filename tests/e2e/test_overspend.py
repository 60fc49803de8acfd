"""A provider that returns more than the estimate allowed for (one ignoring the
model's output limit, say) is billed what it reports; the key's usage shows how
far past its cap it went, and that overspend stays within one request: nothing
more is admitted, however many requests arrive at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.e2e.conftest import Account, Running

INPUT, OUTPUT = 150_000, 600_000  # gpt-4o-mini, micro-USD per million tokens
CATALOG_MAX_OUTPUT = 16_384
REPORTED_OUTPUT = 30_000  # more than the catalog's maximum, on which the estimate is based


def test_output_beyond_the_estimate_is_billed_and_shown_as_overspend_bounded_by_one_request(
    gateway: Running, account: Account
) -> None:
    key = account.mint("overspender", max_spend_usd="0.005")  # 5,000 micros: under one estimate
    client = openai.OpenAI(base_url=gateway.base + "/v1", api_key=str(key["secret"]), max_retries=0)
    headers = {"x-mock-output-tokens": str(REPORTED_OUTPUT)}

    def ask(_: int) -> int:
        try:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "write at length"}],
                extra_headers=headers,
            )
        except openai.APIStatusError as exc:
            return exc.status_code
        return 200

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(ask, range(8)))
    assert sorted(statuses) == [200] + [402] * 7  # the first estimate alone fills the cap
    (event,) = account.events(str(key["id"]), 1)
    assert event["output_tokens"] == REPORTED_OUTPUT  # what the provider reported, past the estimate
    assert event["output_tokens"] > CATALOG_MAX_OUTPUT
    cost = int(event["cost_micros"])  # type: ignore[call-overload]
    assert cost == -(-(int(event["input_tokens"]) * INPUT + REPORTED_OUTPUT * OUTPUT) // 10**6)  # type: ignore[call-overload]

    usage = account.key_usage(str(key["id"]))
    assert (usage["spent_micros"], usage["reserved_micros"]) == (cost, 0)
    assert usage["over_cap_micros"] == cost - 5_000 > 0
    assert usage["remaining_micros"] == 0 and usage["cap_used_bps"] == 10_000
    with pytest.raises(openai.APIStatusError) as info:  # and nothing more is admitted
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=1
        )
    assert info.value.status_code == 402

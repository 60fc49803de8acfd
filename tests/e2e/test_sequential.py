"""A finished request's reservation stops counting against its key as soon as the request
ends, even while its settlement is still on its way to the control plane (issue 14)."""

from __future__ import annotations

import openai
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.conftest import Account, Running

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "One more, please."}]


def test_back_to_back_requests_that_each_reserve_over_a_third_of_the_cap_all_succeed(
    gateway: Running, account: Account
) -> None:
    # gpt-4o-mini without max_tokens reserves its 16,384-token output limit at $0.60/M (~9,800 micros):
    # 39 % of this cap. Each request costs ~12 micros, so all twenty fit many times over.
    key = account.mint("sequential", max_spend_usd="0.025")
    with openai.OpenAI(base_url=gateway.base + "/v1", api_key=str(key["secret"]), max_retries=0) as sdk:
        for _ in range(20):
            reply = sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert reply.choices[0].message.content
    events = account.events(str(key["id"]), 20)
    usage = account.key_usage(str(key["id"]))
    assert usage["spent_micros"] == sum(int(e["cost_micros"]) for e in events)  # type: ignore[call-overload]
    assert int(usage["spent_micros"]) < 25_000

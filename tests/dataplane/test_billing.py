"""The billing fallback policy (dataplane/billing.py), row by row of its table."""

from __future__ import annotations

import pytest

from dataplane.billing import NOTHING, Fallback, bill
from dataplane.providers.usage import Usage

EST = 25  # the input estimate: ceil(100 request bytes / 4)
BOUND = 300  # the reservation's output bound
STREAM = Fallback(EST, BOUND, stream=True, hidden_reasoning=False)
JSON = Fallback(EST, BOUND, stream=False, hidden_reasoning=False)
REASONING = Fallback(EST, BOUND, stream=True, hidden_reasoning=True)


def billed(**units: int) -> dict[str, int]:
    return {**NOTHING.units, **units}


@pytest.mark.parametrize(
    ("usage", "status", "units", "estimated"),
    [
        # upstream refused: nothing, whatever it said
        (Usage(input_tokens=10, output_tokens=5), 429, billed(), False),
        (Usage(delivered_text_bytes=400), 500, billed(), False),
        # no response body parsed at all
        (None, 200, billed(), False),
        # the provider's counts win
        (
            Usage(input_tokens=10, output_tokens=5, cached_input_tokens=3, reasoning_tokens=2),
            200,
            billed(input_tokens=10, output_tokens=5, cached_input_tokens=3, reasoning_tokens=2),
            False,
        ),
        # output reported, input not: the input is estimated
        (Usage(output_tokens=5), 200, billed(input_tokens=EST, output_tokens=5), True),
        # a stream cut before its usage: input + the delivered text, estimated
        (Usage(delivered_text_bytes=41), 200, billed(input_tokens=EST, output_tokens=11), True),
        (
            Usage(input_tokens=10, delivered_text_bytes=8),
            200,
            billed(input_tokens=10, output_tokens=2),
            True,
        ),
        # input reported (Anthropic's message_start), nothing delivered: the input
        (Usage(input_tokens=10), 200, billed(input_tokens=10), True),
        # nothing reported or delivered
        (Usage(), 200, billed(), False),
        # non-token units, as reported; no token estimate is added
        (Usage(characters=120), 200, billed(characters=120), False),
        (Usage(audio_ms=2_001, estimated=True), 200, billed(audio_ms=2_001), True),
        (Usage(images=2, output_tokens=None), 200, billed(images=2), False),
        # the parser's own flag is kept
        (
            Usage(input_tokens=10, output_tokens=5, estimated=True),
            200,
            billed(input_tokens=10, output_tokens=5),
            True,
        ),
    ],
)
def test_what_is_billed(usage: Usage | None, status: int, units: dict[str, int], estimated: bool) -> None:
    result = bill(usage, status, lambda: STREAM)
    assert (result.units, result.estimated) == (units, estimated)


@pytest.mark.parametrize(
    ("usage", "fallback", "units", "estimated"),
    [
        # a JSON body comes once the whole answer is generated: one cut mid-way was paid in full
        (Usage(), JSON, billed(input_tokens=EST, output_tokens=BOUND), True),
        (Usage(delivered_text_bytes=41), JSON, billed(input_tokens=EST, output_tokens=BOUND), True),
        # a whole JSON body without usage: what it delivered, as for a stream
        (
            Usage(complete=True, delivered_text_bytes=41),
            JSON,
            billed(input_tokens=EST, output_tokens=11),
            True,
        ),
        (Usage(complete=True), JSON, billed(), False),
        # a model that may reason: its hidden thinking is bounded only by the reservation
        (Usage(delivered_text_bytes=41), REASONING, billed(input_tokens=EST, output_tokens=BOUND), True),
        (Usage(input_tokens=10), REASONING, billed(input_tokens=10, output_tokens=BOUND), True),
        (Usage(), REASONING, billed(input_tokens=EST, output_tokens=BOUND), True),
        (Usage(delivered_text_bytes=4_000), REASONING, billed(input_tokens=EST, output_tokens=1_000), True),
        # a whole answer without usage (an error inside a 200): what it delivered, reasoning or not
        (Usage(complete=True), REASONING, billed(), False),
        (
            Usage(complete=True, delivered_text_bytes=8),
            REASONING,
            billed(input_tokens=EST, output_tokens=2),
            True,
        ),
        # ... and its own counts, when it sent them, as ever
        (
            Usage(input_tokens=10, output_tokens=40, reasoning_tokens=30),
            REASONING,
            billed(input_tokens=10, output_tokens=40, reasoning_tokens=30),
            False,
        ),
    ],
)
def test_what_is_billed_when_output_was_never_counted(
    usage: Usage, fallback: Fallback, units: dict[str, int], estimated: bool
) -> None:
    result = bill(usage, 200, lambda: fallback)
    assert (result.units, result.estimated) == (units, estimated)

"""The billing fallback policy (dataplane/billing.py), row by row of its table."""

from __future__ import annotations

import pytest

from dataplane.billing import NOTHING, bill
from dataplane.providers.usage import Usage

EST = 25  # the input estimate: ceil(100 request bytes / 4)


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
    result = bill(usage, status, EST)
    assert (result.units, result.estimated) == (units, estimated)

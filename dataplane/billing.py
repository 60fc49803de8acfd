"""What is billed for a response, given what its parser saw: one pure function.

The provider's own counts win whenever it reported them. When it did not (a
stream cut off before its usage event, a body with no usage), the gateway
bills what it can show was delivered, flagged `estimated`:

| upstream answer                    | usage seen                        | billed                                   |
|------------------------------------|-----------------------------------|------------------------------------------|
| 4xx / 5xx                          | anything                          | nothing                                  |
| no response body parsed            | none                              | nothing                                  |
| characters, audio time or images   | those units                       | them, as reported (flag kept)            |
| tokens                             | output reported                   | as reported; input estimated if missing  |
| tokens                             | no output count, text delivered   | input (reported or estimated) + ceil(delivered bytes / 4) output, estimated |
| tokens                             | input only, nothing delivered     | the input, output 0, estimated           |
| tokens                             | nothing reported or delivered     | nothing                                  |

The input estimate is ceil(request bytes / 4) tokens: a typical tokenizer's
ratio, not the reservation's upper bound (which counts a token per byte)."""

from __future__ import annotations

from dataclasses import dataclass

from dataplane.providers.usage import Usage

UNITS = (  # Usage's counters, which are also the fields of the contract's Units
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "audio_input_tokens",
    "audio_output_tokens",
    "characters",
    "audio_ms",
    "images",
    "cache_write_1h_tokens",
    "image_input_tokens",
    "web_searches",
    "file_searches",
)
NON_TOKEN = ("characters", "audio_ms", "images")


@dataclass(frozen=True)
class Bill:
    """Every unit counted (0 when none), and whether any of it was estimated."""

    units: dict[str, int]
    estimated: bool

    @property
    def empty(self) -> bool:
        return not any(self.units.values())


NOTHING = Bill({name: 0 for name in UNITS}, estimated=False)


def bill(usage: Usage | None, http_status: int, input_estimate: int) -> Bill:
    if usage is None or http_status >= 400:
        return NOTHING  # upstream refused: costs nothing
    non_token = any(getattr(usage, name) is not None for name in NON_TOKEN)
    reported = usage.output_tokens is not None or non_token
    if not reported and usage.delivered_text_bytes == 0 and usage.input_tokens is None:
        return NOTHING  # nothing came back
    output = usage.output_tokens if reported else -(-usage.delivered_text_bytes // 4)
    inputs = usage.input_tokens if usage.input_tokens is not None or non_token else input_estimate
    units = {name: getattr(usage, name) or 0 for name in UNITS}
    units["input_tokens"] = inputs or 0
    units["output_tokens"] = output or 0
    estimated = usage.estimated or not reported or (usage.input_tokens is None and not non_token)
    return Bill(units, estimated)

"""What is billed for a response, given what its parser saw: one pure function.

The provider's own counts win whenever it reported them. When it did not (a
stream cut off before its usage event, a body with no usage), the gateway
bills what it can show the provider did, flagged `estimated`:

| upstream answer                    | usage seen                        | billed                                   |
|------------------------------------|-----------------------------------|------------------------------------------|
| 4xx / 5xx                          | anything                          | nothing                                  |
| no response body parsed            | none                              | nothing                                  |
| characters, audio time or images   | those units                       | them, as reported (flag kept)            |
| tokens                             | output reported                   | as reported; input estimated if missing  |
| tokens, a JSON body cut mid-way    | no output count                   | input + the reservation's output bound   |
| tokens, may reason, cut off        | no output count                   | input + the reservation's output bound   |
| tokens                             | no output count, text delivered   | input + ceil(delivered bytes / 4) output |
| tokens                             | input only, nothing delivered     | the input, output 0                      |
| tokens                             | nothing reported or delivered     | nothing                                  |

A JSON body is sent only once the whole answer has been generated, so one that
broke off was paid for in full. (A whole answer without usage, such as an error
inside an HTTP 200, is billed from what it delivered, as any other.) A reasoning model's thinking is output no stream
shows (reasoning.py), so its delivered text bounds nothing: the reservation's
output bound, which is what it was allowed to think and say, is billed instead.
The input estimate is ceil(request bytes / 4) tokens: a typical tokenizer's
ratio, not the reservation's upper bound (which counts a token per byte)."""

from __future__ import annotations

from collections.abc import Callable
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


@dataclass(frozen=True)
class Fallback:
    """What the request was reserved for, for a response whose output was never counted."""

    input_tokens: int  # ceil(request bytes / 4)
    output_tokens: int  # the reservation's output bound: the request's limit (else the model's) x answers
    stream: bool
    hidden_reasoning: bool  # the model may think in tokens the response does not show


def bill(usage: Usage | None, http_status: int, fallback: Callable[[], Fallback]) -> Bill:
    """`fallback` is asked only when the response left a token count out."""
    if usage is None or http_status >= 400:
        return NOTHING  # upstream refused: costs nothing
    non_token = any(getattr(usage, name) is not None for name in NON_TOKEN)
    reported = usage.output_tokens is not None or non_token
    output = usage.output_tokens
    assumed = None if reported else fallback()
    if assumed is not None:
        output = -(-usage.delivered_text_bytes // 4)
        if not usage.complete and (assumed.hidden_reasoning or not assumed.stream):
            output = max(output, assumed.output_tokens)
        if output == 0 and usage.input_tokens is None:
            return NOTHING  # nothing came back
    inputs = usage.input_tokens
    if inputs is None and not non_token:
        inputs = (assumed or fallback()).input_tokens
    units = {name: getattr(usage, name) or 0 for name in UNITS}
    units["input_tokens"] = inputs or 0
    units["output_tokens"] = output or 0
    estimated = usage.estimated or not reported or (usage.input_tokens is None and not non_token)
    return Bill(units, estimated)

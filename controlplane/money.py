"""Integer money. Every amount is micro-USD (1e-6 USD); prices are micro-USD per
million units. Nothing here touches a float."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from spendgate.contract import (  # re-exported: the planes share these through the contract
    MICROS_PER_USD,
    MINUTES_PER_DAY,
    MS_PER_DAY,
    OPTIONAL_RATES,
    RATES,
    Rule,
    format_usd,
    parse_usd,
)

__all__ = [
    "MICROS_PER_USD",
    "MINUTES_PER_DAY",
    "MS_PER_DAY",
    "OPTIONAL_RATES",
    "RATES",
    "Price",
    "Rule",
    "Units",
    "Unpriced",
    "cost_micros",
    "fee_micros",
    "format_usd",
    "parse_usd",
    "priced",
]

UNITS_PER_PRICE = 1_000_000  # prices are per million units
DEFAULT_FEE_BPS = 700  # 7 %


@dataclass(frozen=True)
class Units:
    """What one request consumed. Every kind is disjoint and priced by its own
    column: ``input_tokens`` excludes cached reads, cache writes and audio
    input; ``output_tokens`` excludes audio output. ``reasoning_tokens`` is
    already part of ``output_tokens`` and is kept for reporting only."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    characters: int = 0
    audio_ms: int = 0
    images: int = 0
    cache_write_1h_tokens: int = 0  # cache writes kept for an hour (Anthropic); not in cache_write_tokens
    image_input_tokens: int = 0  # not in input_tokens
    web_searches: int = 0  # server-side search tool calls (Anthropic web search, Gemini grounding)
    file_searches: int = 0  # server-side file (vector store) search tool calls (OpenAI file_search)

    @property
    def total_input_tokens(self) -> int:
        """Every input token of the request: what a prompt-length tier is decided on."""
        return (
            self.input_tokens
            + self.cached_input_tokens
            + self.cache_write_tokens
            + self.cache_write_1h_tokens
            + self.audio_input_tokens
            + self.image_input_tokens
        )

    @property
    def billable(self) -> bool:
        return any(vars(self).values())

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 0:
                raise ValueError(f"{name} must not be negative")


@dataclass(frozen=True)
class Price:
    """One effective-dated catalog row."""

    provider: str
    model: str
    input_micros_per_mtok: int
    output_micros_per_mtok: int
    cached_input_micros_per_mtok: int | None = None
    cache_write_micros_per_mtok: int | None = None
    max_output_tokens: int = 0
    effective_from_ms: int = 0
    source: str = ""
    audio_input_micros_per_mtok: int | None = None
    audio_output_micros_per_mtok: int | None = None
    characters_micros_per_mchar: int | None = None
    audio_seconds_micros_per_msec: int | None = None
    images_micros_per_mimage: int | None = None
    cache_write_1h_micros_per_mtok: int | None = None
    image_input_micros_per_mtok: int | None = None
    web_search_micros_per_mcall: int | None = None
    request_micros_per_mrequest: int | None = None  # a fee per request, on top of its units
    file_search_micros_per_mcall: int | None = None
    rules: tuple[Rule, ...] = ()
    origin: str = ""  # where a stored row came from: "catalog" or "api" (UpsertPrice)

    @property
    def qualified_name(self) -> str:
        return f"{self.provider}/{self.model}"

    def applied(self, units: Units, at_ms: int, service_tier: str = "") -> tuple[Price, tuple[Rule, ...]]:
        """The flat rates in force for one request, and the rules that set them. Where none
        applies, the row itself (its own rates are the flat ones): no copy per request."""
        matched = tuple(
            rule for rule in self.rules if rule.matches(units.total_input_tokens, at_ms, service_tier)
        )
        return (self.with_rates(*(rule.rates for rule in matched)) if matched else self), matched

    def with_rates(self, *overrides: Mapping[str, int]) -> Price:
        merged: dict[str, int] = {}
        for rates in overrides:
            merged.update(rates)
        changes: dict[str, Any] = {"rules": (), **merged}
        return replace(self, **changes)


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


class Unpriced(ValueError):
    """The request consumed a unit kind the model's catalog row has no price for."""


def cost_micros(units: Units, price: Price, at_ms: int = 0, service_tier: str = "") -> int:
    return priced(units, price, at_ms, service_tier)[0]


def priced(units: Units, price: Price, at_ms: int = 0, service_tier: str = "") -> tuple[int, str]:
    """The cost of one request and the labels of the rules that priced it
    (a prompt-length tier, a time-of-day window, a service tier; see `Rule`).

    ``ceil(Σ units × rate / 1e6)``: at most one micro over, never under.
    Token kinds the catalog does not price separately fall back to the input
    (or output) price, so nothing is priced at 0 by omission. Characters,
    audio time, images, one-hour cache writes and web searches have no
    fallback: consuming them without a price raises `Unpriced`. A row's
    per-request fee is charged on every request that consumed anything. Audio
    is counted in milliseconds and priced per second, so the sum is taken in
    thousandths and divided once, exactly."""
    flat, rules = price.applied(units, at_ms, service_tier)
    return _flat_cost(units, flat), "; ".join(rule.label for rule in rules)


def _flat_cost(units: Units, price: Price) -> int:
    def rate(value: int | None, fallback: int) -> int:
        return fallback if value is None else value

    def required(units_used: int, value: int | None, kind: str) -> int:
        if units_used and value is None:
            raise Unpriced(f"{price.qualified_name} has no catalog price for {kind}")
        return value or 0

    per_million = (
        units.input_tokens * price.input_micros_per_mtok
        + units.output_tokens * price.output_micros_per_mtok
        + units.cached_input_tokens * rate(price.cached_input_micros_per_mtok, price.input_micros_per_mtok)
        + units.cache_write_tokens * rate(price.cache_write_micros_per_mtok, price.input_micros_per_mtok)
        + units.audio_input_tokens * rate(price.audio_input_micros_per_mtok, price.input_micros_per_mtok)
        + units.audio_output_tokens * rate(price.audio_output_micros_per_mtok, price.output_micros_per_mtok)
        + units.image_input_tokens * rate(price.image_input_micros_per_mtok, price.input_micros_per_mtok)
        + units.cache_write_1h_tokens
        * required(units.cache_write_1h_tokens, price.cache_write_1h_micros_per_mtok, "one-hour cache writes")
        + units.characters * required(units.characters, price.characters_micros_per_mchar, "characters")
        + units.images * required(units.images, price.images_micros_per_mimage, "images")
        + units.web_searches * required(units.web_searches, price.web_search_micros_per_mcall, "web searches")
        + units.file_searches
        * required(units.file_searches, price.file_search_micros_per_mcall, "file searches")
        + ((price.request_micros_per_mrequest or 0) if units.billable else 0)
    )
    audio = units.audio_ms * required(units.audio_ms, price.audio_seconds_micros_per_msec, "audio seconds")
    return ceil_div(per_million * 1000 + audio, UNITS_PER_PRICE * 1000)


def fee_micros(cost: int, fee_bps: int) -> int:
    """The operator fee on a cost, rounded up to the micro."""
    return ceil_div(cost * fee_bps, 10_000)

"""Integer money. Every amount is micro-USD (1e-6 USD); prices are micro-USD per
million units. Nothing here touches a float."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

MICROS_PER_USD = 1_000_000
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
        """The flat rates in force for one request, and the rules that set them."""
        matched = tuple(
            rule for rule in self.rules if rule.matches(units.total_input_tokens, at_ms, service_tier)
        )
        return self.with_rates(*(rule.rates for rule in matched)), matched

    def with_rates(self, *overrides: Mapping[str, int]) -> Price:
        merged: dict[str, int] = {}
        for rates in overrides:
            merged.update(rates)
        changes: dict[str, Any] = {"rules": (), **merged}
        return replace(self, **changes)


MINUTES_PER_DAY = 24 * 60
MS_PER_DAY = MINUTES_PER_DAY * 60_000


@dataclass(frozen=True)
class Rule:
    """Rates that replace a row's own when every condition set here holds:

    - ``above_input_tokens``: the request's input (all kinds) exceeds it. The cliff
      model: crossing the threshold reprices every token of the request.
    - ``window``: the request started in this daily UTC window, in minutes of the day
      ``[start, end)``; an end before the start wraps past midnight.
    - ``service_tier``: the provider says it ran the request on this tier.

    Rules apply in order; a later one's rates win over an earlier one's."""

    rates: Mapping[str, int] = field(default_factory=dict)
    above_input_tokens: int | None = None
    window: tuple[int, int] | None = None
    service_tier: str = ""

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(RATES)
        if unknown:
            raise ValueError(f"unknown rate(s) {sorted(unknown)}")
        if any(type(v) is not int or v < 0 for v in self.rates.values()):
            raise ValueError("rates must be non-negative integers")
        if self.window is not None and not all(0 <= m <= MINUTES_PER_DAY for m in self.window):
            raise ValueError("window minutes must be within a day (0..1440)")
        if self.above_input_tokens is not None and self.above_input_tokens < 0:
            raise ValueError("above_input_tokens must not be negative")

    def in_window(self, at_ms: int) -> bool:
        if self.window is None:
            return True
        start, end = self.window
        minute = at_ms % MS_PER_DAY // 60_000
        return start <= minute < end if start <= end else minute >= start or minute < end

    def matches(self, input_tokens: int, at_ms: int, service_tier: str) -> bool:
        return (
            (self.above_input_tokens is None or input_tokens > self.above_input_tokens)
            and self.in_window(at_ms)
            and (not self.service_tier or self.service_tier == service_tier)
        )

    @property
    def label(self) -> str:
        """How an event records that this rule priced it."""
        parts = []
        if self.above_input_tokens is not None:
            parts.append(f"input>{self.above_input_tokens}")
        if self.window is not None:
            parts.append(
                "{:02d}:{:02d}-{:02d}:{:02d}UTC".format(
                    *divmod(self.window[0], 60), *divmod(self.window[1], 60)
                )
            )
        if self.service_tier:
            parts.append(f"tier={self.service_tier}")
        return " ".join(parts)


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


# The per-unit rates a catalog row may leave unset ("not priced separately").
OPTIONAL_RATES = (
    "cached_input_micros_per_mtok",
    "cache_write_micros_per_mtok",
    "audio_input_micros_per_mtok",
    "audio_output_micros_per_mtok",
    "characters_micros_per_mchar",
    "audio_seconds_micros_per_msec",
    "images_micros_per_mimage",
    "cache_write_1h_micros_per_mtok",
    "image_input_micros_per_mtok",
    "web_search_micros_per_mcall",
    "request_micros_per_mrequest",
    "file_search_micros_per_mcall",
)
RATES = ("input_micros_per_mtok", "output_micros_per_mtok", *OPTIONAL_RATES)


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


def parse_usd(text: str | int | Decimal) -> int:
    """Exact USD → micros: ``"5"`` → 5_000_000, ``"0.000001"`` → 1. Rejects
    negatives and anything finer than a micro instead of rounding it."""
    try:
        amount = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"not a number of USD: {text!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"USD amount must be a non-negative number: {text!r}")
    micros = amount * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise ValueError(f"USD amount finer than one micro-USD: {text!r}")
    return int(micros)


def format_usd(micros: int) -> str:
    """Micros → an exact decimal string of USD ("5.25", "0.000001")."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_USD)
    text = f"{whole}.{frac:06d}".rstrip("0").rstrip(".")
    return sign + text

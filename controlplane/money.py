"""Integer money. Every amount is micro-USD (1e-6 USD); prices are micro-USD per
million units. Nothing here touches a float."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

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

    @property
    def qualified_name(self) -> str:
        return f"{self.provider}/{self.model}"


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
)


class Unpriced(ValueError):
    """The request consumed a unit kind the model's catalog row has no price for."""


def cost_micros(units: Units, price: Price) -> int:
    """``ceil(Σ units × price / 1e6)``: at most one micro over, never under.

    Token kinds the catalog does not price separately fall back to the input
    (or output) price, so nothing is priced at 0 by omission. Characters,
    audio and images have no fallback: consuming them without a price raises
    `Unpriced`. Audio is counted in milliseconds and priced per second, so the
    sum is taken in thousandths and divided once, exactly."""

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
        + units.characters * required(units.characters, price.characters_micros_per_mchar, "characters")
        + units.images * required(units.images, price.images_micros_per_mimage, "images")
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

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
    """What one request consumed. Input kinds are disjoint: ``input_tokens``
    excludes cached reads and cache writes. ``reasoning_tokens`` is already
    part of ``output_tokens`` and is kept for reporting only."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

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

    @property
    def qualified_name(self) -> str:
        return f"{self.provider}/{self.model}"


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def cost_micros(units: Units, price: Price) -> int:
    """``ceil(Σ units × price / 1e6)``: at most one micro over, never under.

    A dimension the catalog does not price separately falls back to the input
    price, so nothing is ever priced at 0 by omission."""
    cached = price.cached_input_micros_per_mtok
    write = price.cache_write_micros_per_mtok
    total = (
        units.input_tokens * price.input_micros_per_mtok
        + units.output_tokens * price.output_micros_per_mtok
        + units.cached_input_tokens * (price.input_micros_per_mtok if cached is None else cached)
        + units.cache_write_tokens * (price.input_micros_per_mtok if write is None else write)
    )
    return ceil_div(total, UNITS_PER_PRICE)


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

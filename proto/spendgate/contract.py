"""The contract both planes and the clients share besides the messages in v1/:
integer USD (micro-USD amounts), the catalog's rate names and price rules, and
the names of the proto enums as the JSON and CLI surfaces spell them. No
dependency beyond the standard library and the generated code; nothing in
controlplane/, dataplane/ or clients/ is imported from here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal, InvalidOperation
from typing import Any, Protocol

from spendgate.v1 import keys_pb2, usage_pb2

MICROS_PER_USD = 1_000_000

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


def rule_from_pb(msg: usage_pb2.PriceRule) -> Rule:
    """A PriceRule message as a Rule; raises ValueError for one that is not valid."""
    if msg.HasField("window_start_minute") != msg.HasField("window_end_minute"):
        raise ValueError("a window needs both its start and its end")
    window = (msg.window_start_minute, msg.window_end_minute) if msg.HasField("window_start_minute") else None
    return Rule(
        rates={name: getattr(msg.rates, name) for name in RATES if msg.rates.HasField(name)},
        above_input_tokens=msg.above_input_tokens if msg.HasField("above_input_tokens") else None,
        window=window,
        service_tier=msg.service_tier,
    )


# --- proto enums by name ------------------------------------------------------------


class ProtoEnum(Protocol):
    """A generated enum wrapper (e.g. `keys_pb2.KeyScope`). Its values are typed as the
    enum's own int subtype in the stubs, which a Protocol cannot name: they come back as Any."""

    def items(self) -> list[tuple[str, int]]: ...


def _prefix(enum: ProtoEnum) -> str:
    unspecified = next(name for name, value in enum.items() if value == 0)
    return unspecified.removesuffix("UNSPECIFIED")


def enum_names(enum: ProtoEnum) -> dict[Any, str]:
    """Each value of a proto enum → its name as JSON and the CLI spell it:
    `KEY_SCOPE_MASTER` → "master" (the UNSPECIFIED value is left out)."""
    prefix = _prefix(enum)
    return {value: name.removeprefix(prefix).lower() for name, value in enum.items() if value != 0}


def enum_values(enum: ProtoEnum) -> dict[str, Any]:
    """The reverse of `enum_names`: "master" → `KEY_SCOPE_MASTER`."""
    return {name: value for value, name in enum_names(enum).items()}


# --- USD -------------------------------------------------------------------------------


MAX_USD_DIGITS = 30  # more whole digits than any amount a 64-bit count of micros can hold


def parse_usd(text: str | int | Decimal) -> int:
    """Exact USD → micros: ``"5"`` → 5_000_000, ``"0.000001"`` → 1. Rejects
    negatives and anything finer than a micro instead of rounding it."""
    try:
        amount = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"not a number of USD: {text!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"USD amount must be a non-negative number: {text!r}")
    if amount and amount.adjusted() > MAX_USD_DIGITS:  # "1e99999" would make a 100k-digit integer
        raise ValueError(f"USD amount too large: {text!r}")
    # Exactly: the default context's 28 digits would round "1.0000000000000000000000000001" to 1.
    micros = amount.scaleb(6, Context(prec=len(amount.as_tuple().digits) + 1))
    if micros != micros.to_integral_value():
        raise ValueError(f"USD amount finer than one micro-USD: {text!r}")
    return int(micros)


def format_usd(micros: int) -> str:
    """Micros → an exact decimal string of USD ("5.25", "0.000001")."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_USD)
    text = f"{whole}.{frac:06d}".rstrip("0").rstrip(".")
    return sign + text


# --- rate limits --------------------------------------------------------------------------

MINUTE_MS = 60_000
MAX_RATE_LIMIT = 10**12  # per minute: far beyond any provider's; scaled by MINUTE_MS it still fits BIGINT


@dataclass(frozen=True)
class RateLimits:
    """A key's limits besides money, as both planes hold them; None: no such limit."""

    rpm: int | None = None
    tpm: int | None = None
    parallel: int | None = None

    @property
    def any(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.parallel is not None

    @classmethod
    def from_pb(cls, msg: keys_pb2.RateLimits) -> RateLimits:
        return cls(
            msg.rpm_limit if msg.HasField("rpm_limit") else None,
            msg.tpm_limit if msg.HasField("tpm_limit") else None,
            msg.max_parallel_requests if msg.HasField("max_parallel_requests") else None,
        )

    def to_pb(self) -> keys_pb2.RateLimits:
        return keys_pb2.RateLimits(
            rpm_limit=self.rpm, tpm_limit=self.tpm, max_parallel_requests=self.parallel
        )


# --- tokens per minute -------------------------------------------------------------------

# The usage a settled request counts against its key's tokens-per-minute limit: every kind
# of input and output token (reasoning is part of output_tokens; characters, audio seconds
# and images are not tokens). Field names are the same on `Units` and the proto's Units.
TOKEN_UNITS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "image_input_tokens",
    "audio_input_tokens",
    "output_tokens",
    "audio_output_tokens",
)


def token_count(units: object) -> int:
    return sum(int(getattr(units, name)) for name in TOKEN_UNITS)

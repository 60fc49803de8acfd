"""The built-in catalog's prices, from `genai-prices` (Pydantic's maintained price
database: it already models prompt-length tiers, time-of-day windows, dated price
changes, one-hour cache writes, web searches and service tiers).

Its prices are Decimal USD per unit block (per million tokens, per thousand
searches or requests); ours are integer micro-USD per million units. The conversion
is exact or refused: a price that is not a whole number of micros per million
units is not rounded, and its model is left out (`Skipped`) rather than billed
wrong. So is a model priced by a unit this gateway does not meter (video
tokens, audio hours, reasoning tokens at their own rate, …): it is unknown here,
never free. How each genai-prices structure maps:

- `TieredPrices` → a `Rule` with `above_input_tokens` (both use the cliff model);
- a `ConditionalPrice` with a `StartDateConstraint` → its own effective-dated row;
  with a `TimeOfDateConstraint` → a `Rule` with a `window`;
- a `PriceVariant` keyed by `service_tier` → a `Rule` with a `service_tier`.
  Variants keyed by anything else (`processing: batch`, `speed`, `route`) select
  APIs or options this gateway does not proxy, and are left out.

Only rows in force now or later are taken (`rows_from`): a past price is already
in the database, where past invoices were priced from it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from importlib.metadata import version

from genai_prices import types as gp
from genai_prices.data import providers as _GENAI_PROVIDERS

from controlplane.money import MICROS_PER_USD, UNITS_PER_PRICE, Price, Rule

# Our provider id → genai-prices' provider id. Qwen (DashScope), Deepgram and the
# media APIs are not there; their rows stay hand-written in catalog_data/.
PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "google",
    "deepseek": "deepseek",
    "mistral": "mistral",
    "xai": "x-ai",
    "moonshot": "moonshotai",
    "minimax": "minimax",
    "cerebras": "cerebras",
}

# genai-prices price key → (our rate, units its price is quoted per).
RATES: Mapping[str, tuple[str, int]] = {
    "input_mtok": ("input_micros_per_mtok", 1_000_000),
    "output_mtok": ("output_micros_per_mtok", 1_000_000),
    "cache_read_mtok": ("cached_input_micros_per_mtok", 1_000_000),
    "cache_write_mtok": ("cache_write_micros_per_mtok", 1_000_000),
    "cache_write_5m_mtok": ("cache_write_micros_per_mtok", 1_000_000),
    "cache_write_1h_mtok": ("cache_write_1h_micros_per_mtok", 1_000_000),
    "input_audio_mtok": ("audio_input_micros_per_mtok", 1_000_000),
    "output_audio_mtok": ("audio_output_micros_per_mtok", 1_000_000),
    "input_image_mtok": ("image_input_micros_per_mtok", 1_000_000),
    "web_searches_kcount": ("web_search_micros_per_mcall", 1_000),
    "requests_kcount": ("request_micros_per_mrequest", 1_000),
    "storage_searches_kcount": ("file_search_micros_per_mcall", 1_000),  # OpenAI file_search calls
}


# The output bound of a model genai-prices gives no context window for, and limits.toml
# does not list: an estimate needs one (a request may set its own, lower).
ASSUMED_OUTPUT_LIMIT = 131_072


class Inexact(ValueError):
    """A price that is not a whole number of micro-USD per million units."""


class Unsupported(ValueError):
    """A price structure or unit this gateway cannot bill exactly."""


@dataclass(frozen=True)
class Skipped:
    provider: str
    model: str
    reason: str


def package_version() -> str:
    return version("genai-prices")


def micros_per_million(usd: Decimal, per: int, where: str) -> int:
    """USD per `per` units → integer micro-USD per million units, exactly."""
    micros = usd * MICROS_PER_USD * UNITS_PER_PRICE / per
    if not usd.is_finite() or usd < 0 or micros != micros.to_integral_value():
        raise Inexact(f"{where}: ${usd} per {per:,} is not a whole number of micro-USD per million")
    return int(micros)


def _flat(prices: gp.ModelPrice, where: str) -> tuple[dict[str, int], list[Rule]]:
    """A ModelPrice's flat rates, and a tier rule per threshold it has."""
    rates: dict[str, int] = {}
    tiers: dict[int, dict[str, int]] = {}
    for key, value in vars(prices).items():
        if key.startswith("_") or value is None:
            continue
        if key not in RATES:
            raise Unsupported(f"{where}: priced per {key}, a unit this gateway does not meter")
        name, per = RATES[key]
        if isinstance(value, gp.TieredPrices):
            rates[name] = micros_per_million(value.base, per, f"{where} {key}")
            for tier in value.tiers:
                tiers.setdefault(tier.start, {})[name] = micros_per_million(tier.price, per, f"{where} {key}")
        else:
            rates[name] = micros_per_million(value, per, f"{where} {key}")
    # A tier reprices every key that has one at or below its threshold (the cliff model).
    rules = []
    for start in sorted(tiers):
        overrides = {n: v for lower in sorted(tiers) if lower <= start for n, v in tiers[lower].items()}
        rules.append(Rule(rates=overrides, above_input_tokens=start))
    return rates, rules


def _window(constraint: gp.TimeOfDateConstraint, where: str) -> tuple[int, int]:
    def minute(t: dt.time) -> int:
        if t.second or t.microsecond or (t.utcoffset() or dt.timedelta()) != dt.timedelta():
            raise Unsupported(f"{where}: a time-of-day window not on a UTC minute")
        return t.hour * 60 + t.minute

    start, end = minute(constraint.start_time), minute(constraint.end_time)
    return start, end or 24 * 60


def _day_ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1000


def _dates(info: gp.ModelInfo) -> list[int]:
    """Where the model's rows begin: the epoch and every dated change."""
    entries = info.prices if isinstance(info.prices, list) else []
    constraints = [e.constraint for e in entries] + [v.constraint for v in info.price_variants or []]
    return sorted({0, *(_day_ms(c.start_date) for c in constraints if isinstance(c, gp.StartDateConstraint))})


def _active(constraint: object, at_ms: int) -> bool:
    return not isinstance(constraint, gp.StartDateConstraint) or _day_ms(constraint.start_date) <= at_ms


def _row_at(provider: str, info: gp.ModelInfo, at_ms: int, source: str) -> Price:
    where = f"{provider}/{info.id}"
    entries = info.prices if isinstance(info.prices, list) else [gp.ConditionalPrice(prices=info.prices)]
    # The last entry in force wins: the dated (or plain) one is the row, windows after it its rules.
    base_index = max(
        i
        for i, e in enumerate(entries)
        if not isinstance(e.constraint, gp.TimeOfDateConstraint) and _active(e.constraint, at_ms)
    )
    rates, rules = _flat(entries[base_index].prices, where)
    for entry in entries[base_index + 1 :]:
        if isinstance(entry.constraint, gp.TimeOfDateConstraint):
            window = _window(entry.constraint, where)
            window_rates, window_tiers = _flat(entry.prices, where)
            if window_tiers:
                raise Unsupported(f"{where}: a time-of-day price with its own prompt-length tiers")
            rules.append(Rule(rates=window_rates, window=window))
    for variant in info.price_variants or []:
        tier = variant.when.get("service_tier")
        if tier is None or set(variant.when) != {"service_tier"} or not _active(variant.constraint, at_ms):
            continue
        variant_window = (
            _window(variant.constraint, where)
            if isinstance(variant.constraint, gp.TimeOfDateConstraint)
            else None
        )
        variant_rates, variant_tiers = _flat(variant.prices, f"{where} ({tier})")
        rules.append(Rule(rates=variant_rates, window=variant_window, service_tier=tier))
        rules.extend(
            Rule(
                rates=r.rates,
                above_input_tokens=r.above_input_tokens,
                window=variant_window,
                service_tier=tier,
            )
            for r in variant_tiers
        )
    for required in ("input_micros_per_mtok", "output_micros_per_mtok"):
        rates.setdefault(required, 0)
    return Price(
        provider=provider,
        model=info.id,
        effective_from_ms=at_ms,
        # genai-prices has no output limit; the context window bounds output (limits.toml narrows it).
        max_output_tokens=info.context_window or ASSUMED_OUTPUT_LIMIT,
        source=source,
        rules=tuple(rules),
        **rates,  # type: ignore[arg-type]
    )


def _models(provider: gp.Provider) -> Iterator[tuple[str, gp.ModelInfo]]:
    """Each model by its id, and by the exact names its match rule lists."""
    for info in provider.models:
        yield info.id, info
        yield from ((name, info) for name in _equals(info.match) if name != info.id)


def _equals(match: object) -> Iterator[str]:
    if isinstance(match, gp.ClauseEquals):
        yield match.equals
    elif isinstance(match, gp.ClauseOr):
        for clause in match.or_:
            yield from _equals(clause)


def rows_from(
    now_ms: int, providers: Iterable[gp.Provider] | None = None
) -> tuple[list[Price], list[Skipped]]:
    """Every model of the providers we proxy: the row in force at `now_ms` and any
    announced for later, each effective from its own start (now for the current one).
    Models that cannot be priced exactly are returned as skipped, with the reason."""
    by_id = {p.id: p for p in (_GENAI_PROVIDERS if providers is None else providers)}
    rows: list[Price] = []
    skipped: list[Skipped] = []
    for ours, theirs in PROVIDERS.items():
        provider = by_id.get(theirs)
        if provider is None:
            continue
        source = f"genai-prices {package_version()}: {', '.join(provider.pricing_urls or [provider.name])}"
        seen: set[str] = set()
        for name, info in _models(provider):
            if name in seen:
                continue
            seen.add(name)
            starts = _dates(info)
            current = max(d for d in starts if d <= now_ms)
            try:
                found = [_row_at(ours, info, d, source) for d in starts if d >= current]
            except (Inexact, Unsupported) as exc:
                skipped.append(Skipped(ours, name, str(exc)))
                continue
            # The current row takes effect when synced (0: now); announced ones on their day.
            rows.extend(
                replace(
                    row,
                    model=name,
                    effective_from_ms=0 if row.effective_from_ms <= now_ms else row.effective_from_ms,
                )
                for row in found
            )
    return rows, skipped

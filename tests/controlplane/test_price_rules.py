"""Price rules (money.Rule) and the conversion of genai-prices into catalog rows
(controlplane/genai_catalog.py): each figure is worked out by hand from the
provider's published prices."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from genai_prices import types as gp

from controlplane import catalog, genai_catalog
from controlplane.money import Price, Rule, Units, Unpriced, cost_micros, priced

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
NOW = 1_796_083_200_000  # 2026-12-01 00:00 UTC


def builtin(provider: str, model: str) -> Price:
    rows = [
        p for p in catalog.builtin(NOW) if (p.provider, p.model, p.effective_from_ms) == (provider, model, 0)
    ]
    assert len(rows) == 1, rows
    return rows[0]


def test_a_prompt_over_the_tier_threshold_reprices_every_token_of_the_request() -> None:
    """Gemini 2.5 Pro: $1.25/$10 up to 200k prompt tokens, $2.50/$15 for the whole request above."""
    pro = builtin("google", "gemini-2.5-pro")
    small = Units(input_tokens=200_000, output_tokens=1_000)
    large = Units(input_tokens=300_000, output_tokens=1_000)
    assert priced(small, pro, NOW) == (250_000 + 10_000, "")
    assert priced(large, pro, NOW) == (750_000 + 15_000, "input>200000")
    # Cached tokens count toward the threshold, and are repriced too ($0.125 -> $0.25).
    mixed = Units(input_tokens=150_000, cached_input_tokens=100_000)
    assert priced(mixed, pro, NOW) == (375_000 + 25_000, "input>200000")


def test_deepseek_peak_hours_cost_twice_the_off_peak_rate() -> None:
    """DeepSeek V4 Pro: $0.66/$1.98 off-peak, $1.32/$3.96 at 01:00-04:00 and 06:00-10:00 UTC."""
    v4 = builtin("deepseek", "deepseek-v4-pro")
    units = Units(input_tokens=1_000_000, output_tokens=1_000_000)
    assert priced(units, v4, NOW + 2 * HOUR_MS) == (1_320_000 + 3_960_000, "01:00-04:00UTC")
    assert priced(units, v4, NOW + 12 * HOUR_MS) == (660_000 + 1_980_000, "")
    assert priced(units, v4, NOW + 4 * HOUR_MS) == (660_000 + 1_980_000, "")  # the end is exclusive


def test_anthropic_one_hour_cache_writes_and_web_searches_have_their_own_rates() -> None:
    """Claude Sonnet 4.6: $3 input, 5-minute writes $3.75, 1-hour writes $6, $10 per 1,000 searches."""
    sonnet = builtin("anthropic", "claude-sonnet-4-6")
    units = Units(input_tokens=1_000, cache_write_tokens=10_000, cache_write_1h_tokens=10_000, web_searches=3)
    assert cost_micros(units, sonnet) == 3_000 + 37_500 + 60_000 + 30_000


def test_a_service_tier_rule_prices_the_requests_that_ran_on_it() -> None:
    flat = Price(
        "p",
        "m",
        1_000_000,
        2_000_000,
        rules=(Rule({"input_micros_per_mtok": 2_000_000}, service_tier="priority"),),
    )
    units = Units(input_tokens=1_000_000)
    assert priced(units, flat, NOW, "priority") == (2_000_000, "tier=priority")
    assert priced(units, flat, NOW, "default") == (1_000_000, "")


def test_a_window_past_midnight_wraps_and_later_rules_win() -> None:
    night = Rule({"input_micros_per_mtok": 5}, window=(22 * 60, 2 * 60))
    assert [night.in_window(NOW + h * HOUR_MS) for h in (21, 22, 23, 0, 1, 2)] == [
        False,
        True,
        True,
        True,
        True,
        False,
    ]
    price = Price("p", "m", 1, 1, rules=(night, Rule({"input_micros_per_mtok": 7}, above_input_tokens=0)))
    assert price.applied(Units(input_tokens=1), NOW + 23 * HOUR_MS)[0].input_micros_per_mtok == 7


def test_units_without_a_rate_are_refused_and_a_request_fee_is_charged_once() -> None:
    price = Price("p", "m", 1_000_000, 1_000_000, request_micros_per_mrequest=5_000_000_000)
    with pytest.raises(Unpriced, match="one-hour cache writes"):
        cost_micros(Units(cache_write_1h_tokens=1), price)
    with pytest.raises(Unpriced, match="web searches"):
        cost_micros(Units(web_searches=1), price)
    assert cost_micros(Units(input_tokens=1_000), price) == 1_000 + 5_000
    assert cost_micros(Units(), price) == 0  # a request that consumed nothing pays no fee


def test_conversion_is_exact_or_refused() -> None:
    assert genai_catalog.micros_per_million(Decimal("0.003625"), 1_000_000, "x") == 3_625
    assert genai_catalog.micros_per_million(Decimal("35"), 1_000, "x") == 35_000_000_000  # per 1k searches
    with pytest.raises(genai_catalog.Inexact, match="not a whole number"):
        genai_catalog.micros_per_million(Decimal("0.0000005"), 1_000_000, "x")
    with pytest.raises(genai_catalog.Inexact):
        genai_catalog.micros_per_million(Decimal("0.0000000001"), 1_000, "x")


def provider(*models: gp.ModelInfo) -> gp.Provider:
    return gp.Provider(id="deepseek", name="DeepSeek", api_pattern="x", models=list(models))


def model(
    prices: gp.ModelPrice | list[gp.ConditionalPrice], variants: list[gp.PriceVariant] | None = None
) -> gp.ModelInfo:
    return gp.ModelInfo(
        id="m",
        match=gp.ClauseEquals(equals="m"),
        prices=prices,
        price_variants=variants,
    )


def test_an_inexact_or_unmetered_price_leaves_the_model_out_with_its_reason() -> None:
    inexact = model(gp.ModelPrice(input_mtok=Decimal("0.0000005"), output_mtok=Decimal("1")))
    rows, skipped = genai_catalog.rows_from(NOW, [provider(inexact)])
    assert rows == [] and "not a whole number" in skipped[0].reason
    video = model(
        gp.ModelPrice(input_mtok=Decimal("1"), output_mtok=Decimal("1"), input_video_mtok=Decimal("2"))
    )
    rows, skipped = genai_catalog.rows_from(NOW, [provider(video)])
    assert rows == [] and "input_video_mtok" in skipped[0].reason


def test_dated_changes_become_rows_and_only_the_current_and_announced_ones_are_taken() -> None:
    past, future = dt.date(2026, 8, 17), dt.date(2027, 1, 1)
    info = model(
        [
            gp.ConditionalPrice(prices=gp.ModelPrice(input_mtok=Decimal("1"), output_mtok=Decimal("2"))),
            gp.ConditionalPrice(
                constraint=gp.StartDateConstraint(start_date=past),
                prices=gp.ModelPrice(input_mtok=Decimal("3"), output_mtok=Decimal("4")),
            ),
            gp.ConditionalPrice(
                constraint=gp.StartDateConstraint(start_date=future),
                prices=gp.ModelPrice(input_mtok=Decimal("5"), output_mtok=Decimal("6")),
            ),
            gp.ConditionalPrice(
                constraint=gp.TimeOfDateConstraint(
                    start_time=dt.time(16, 30, tzinfo=dt.UTC), end_time=dt.time(0, 30, tzinfo=dt.UTC)
                ),
                prices=gp.ModelPrice(input_mtok=Decimal("9"), output_mtok=Decimal("9")),
            ),
        ],
        [
            gp.PriceVariant(
                when={"service_tier": "flex"},
                prices=gp.ModelPrice(
                    input_mtok=gp.TieredPrices(Decimal("0.5"), [gp.Tier(1000, Decimal("0.75"))])
                ),
            ),
            gp.PriceVariant(when={"processing": "batch"}, prices=gp.ModelPrice(input_mtok=Decimal("0.1"))),
        ],
    )
    rows, skipped = genai_catalog.rows_from(NOW, [provider(info)])
    assert skipped == []
    current, announced = rows
    assert (current.effective_from_ms, current.input_micros_per_mtok) == (0, 3_000_000)
    assert announced.effective_from_ms == 1_798_761_600_000 and announced.input_micros_per_mtok == 5_000_000
    assert current.rules == (
        Rule({"input_micros_per_mtok": 9_000_000, "output_micros_per_mtok": 9_000_000}, window=(990, 30)),
        Rule({"input_micros_per_mtok": 500_000}, service_tier="flex"),
        Rule({"input_micros_per_mtok": 750_000}, above_input_tokens=1000, service_tier="flex"),
    )  # the batch variant is for an API the gateway does not proxy


def test_every_builtin_row_has_a_source_and_the_rows_the_issue_named_are_right() -> None:
    rows = catalog.builtin(NOW)
    assert all(p.source for p in rows)
    by = {(p.provider, p.model): p for p in rows if p.effective_from_ms == 0}
    assert (
        by["deepseek", "deepseek-v4-flash"].input_micros_per_mtok,
        by["deepseek", "deepseek-v4-flash"].output_micros_per_mtok,
    ) == (150_000, 600_000)
    assert (
        by["mistral", "mistral-medium-latest"].input_micros_per_mtok,
        by["mistral", "mistral-medium-latest"].output_micros_per_mtok,
    ) == (1_500_000, 7_500_000)
    assert by["xai", "grok-4.20-0309-reasoning"].input_micros_per_mtok == 1_250_000
    qwen = by["qwen", "qwen-plus"]
    assert qwen.cached_input_micros_per_mtok is not None
    assert qwen.cached_input_micros_per_mtok * 5 == qwen.input_micros_per_mtok  # implicit cache hits: 20 %
    assert by["openai", "gpt-4o-mini"].max_output_tokens == 16_384  # limits.toml

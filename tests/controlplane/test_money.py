"""Cost arithmetic against an exact rational reference (hypothesis)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.money import Price, Units, cost_micros, fee_micros, format_usd, parse_usd

counts = st.integers(min_value=0, max_value=10**9)
rates = st.integers(min_value=0, max_value=10**9)
optional_rates = st.one_of(st.none(), rates)


@given(counts, counts, counts, counts, rates, rates, optional_rates, optional_rates)
def test_cost_is_the_exact_ceiling_of_the_rational_sum(
    inp: int, out: int, cached: int, write: int, pin: int, pout: int, pcached: int | None, pwrite: int | None
) -> None:
    units = Units(input_tokens=inp, output_tokens=out, cached_input_tokens=cached, cache_write_tokens=write)
    price = Price("p", "m", pin, pout, pcached, pwrite)
    exact = (
        Fraction(inp * pin, 10**6)
        + Fraction(out * pout, 10**6)
        + Fraction(cached * (pin if pcached is None else pcached), 10**6)
        + Fraction(write * (pin if pwrite is None else pwrite), 10**6)
    )
    cost = cost_micros(units, price)
    assert cost == math.ceil(exact)
    assert 0 <= cost - exact < 1  # at most one micro over, never under


@given(st.integers(min_value=0, max_value=10**15), st.integers(min_value=0, max_value=10_000))
def test_fee_is_the_exact_ceiling(cost: int, bps: int) -> None:
    assert fee_micros(cost, bps) == math.ceil(Fraction(cost * bps, 10_000))


@given(st.integers(min_value=0, max_value=10**15))
def test_usd_round_trips_exactly(micros: int) -> None:
    assert parse_usd(format_usd(micros)) == micros


@pytest.mark.parametrize(
    ("text", "micros"),
    [("5", 5_000_000), ("0.000001", 1), ("1.5", 1_500_000), ("20.00", 20_000_000), (" 3 ", 3_000_000)],
)
def test_parse_usd(text: str, micros: int) -> None:
    assert parse_usd(text) == micros


@pytest.mark.parametrize("text", ["-1", "0.0000001", "abc", "NaN", "Infinity", ""])
def test_parse_usd_rejects_what_it_cannot_represent(text: str) -> None:
    with pytest.raises(ValueError):
        parse_usd(text)


def test_units_refuse_negative_counts() -> None:
    with pytest.raises(ValueError, match="output_tokens"):
        Units(output_tokens=-1)

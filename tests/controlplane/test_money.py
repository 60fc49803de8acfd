"""Cost arithmetic against an exact rational reference (hypothesis)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.money import Price, Units, Unpriced, cost_micros, fee_micros, format_usd, parse_usd

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
    [
        ("5", 5_000_000),
        ("0.000001", 1),
        ("1.5", 1_500_000),
        ("20.00", 20_000_000),
        (" 3 ", 3_000_000),
        ("9223372036854.775807", 2**63 - 1),  # the most a key's cap can be, exactly
        ("1234567890123456789012.123456", 1234567890123456789012123456),  # beyond 28 digits, exactly
        ("1.5e3", 1_500_000_000),
        ("0e5", 0),
    ],
)
def test_parse_usd(text: str, micros: int) -> None:
    assert parse_usd(text) == micros


@pytest.mark.parametrize(
    "text",
    ["-1", "0.0000001", "abc", "NaN", "Infinity", "", "1.0000000000000000000000000001", "1e99999", "1e31"],
)
def test_parse_usd_rejects_what_it_cannot_represent(text: str) -> None:
    with pytest.raises(ValueError):
        parse_usd(text)


def test_units_refuse_negative_counts() -> None:
    with pytest.raises(ValueError, match="output_tokens"):
        Units(output_tokens=-1)


@given(
    counts,
    counts,
    counts,
    counts,
    counts,
    counts,
    rates,
    rates,
    optional_rates,
    optional_rates,
    rates,
    rates,
    rates,
)
def test_non_token_units_cost_the_exact_ceiling_too(
    audio_in: int,
    audio_out: int,
    chars: int,
    audio_ms: int,
    images: int,
    inp: int,
    pin: int,
    pout: int,
    paudio_in: int | None,
    paudio_out: int | None,
    pchar: int,
    psec: int,
    pimage: int,
) -> None:
    units = Units(
        input_tokens=inp,
        audio_input_tokens=audio_in,
        audio_output_tokens=audio_out,
        characters=chars,
        audio_ms=audio_ms,
        images=images,
    )
    price = Price(
        "p",
        "m",
        pin,
        pout,
        audio_input_micros_per_mtok=paudio_in,
        audio_output_micros_per_mtok=paudio_out,
        characters_micros_per_mchar=pchar,
        audio_seconds_micros_per_msec=psec,
        images_micros_per_mimage=pimage,
    )
    exact = (
        Fraction(inp * pin, 10**6)
        + Fraction(audio_in * (pin if paudio_in is None else paudio_in), 10**6)
        + Fraction(audio_out * (pout if paudio_out is None else paudio_out), 10**6)
        + Fraction(chars * pchar, 10**6)
        + Fraction(audio_ms, 1000) * Fraction(psec, 10**6)  # milliseconds priced per second
        + Fraction(images * pimage, 10**6)
    )
    assert cost_micros(units, price) == math.ceil(exact)


@pytest.mark.parametrize(
    ("units", "kind"),
    [(Units(characters=1), "characters"), (Units(audio_ms=1), "audio seconds"), (Units(images=1), "images")],
)
def test_unpriced_units_are_refused_never_free(units: Units, kind: str) -> None:
    with pytest.raises(Unpriced, match=kind):
        cost_micros(units, Price("p", "m", 1, 1))

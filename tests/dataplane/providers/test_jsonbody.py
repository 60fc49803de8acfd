"""jsonbody.loads: orjson reads first, Python's parser decides whatever orjson refuses."""

from __future__ import annotations

import json
import math

import pytest

from dataplane.providers.jsonbody import count, loads


@pytest.mark.parametrize(
    "text",
    [
        '{"usage": {"prompt_tokens": 3, "completion_tokens": 5}}',
        '{"a": 1, "a": 2}',
        '"\\ud83d\\ude00"',
        "18446744073709551615",
        "-0.0",
        '{"\\u0075sage": 1}',
    ],
)
def test_what_both_parsers_read_is_read_the_same(text: str) -> None:
    assert loads(text) == json.loads(text)
    assert loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"x": NaN}', "nan"),
        ("1e400", math.inf),
        ('"\\ud800"', "\ud800"),
    ],
)
def test_what_orjson_refuses_python_reads(text: str, expected: object) -> None:
    value = loads(text)
    if expected == "nan":
        assert isinstance(value, dict) and math.isnan(value["x"])
    else:
        assert value == expected


def test_a_utf16_body_is_read_as_before() -> None:
    assert loads('{"usage": {"prompt_tokens": 7}}'.encode("utf-16")) == {"usage": {"prompt_tokens": 7}}


def test_an_integer_past_64_bits_is_no_token_count_either_way() -> None:
    # orjson reads it as a float, Python as an int: neither is a count the ledger can hold.
    for text in ("18446744073709551616", "-9223372036854775809"):
        assert count(loads(text)) is None
        assert count(json.loads(text)) is None


def test_what_neither_reads_is_none() -> None:
    assert loads("{") is None
    assert loads("[" * 100_000 + "]" * 100_000) is None

"""Reading a client's JSON body (issue 15.7): how deep it nests is the client's
choice, and both Python's parser and its serialiser recurse. Every body is
either refused with a BadRequest or safe to walk and re-serialise."""

from __future__ import annotations

import json
import sys
from decimal import Decimal

import pytest

from dataplane.errors import BadRequest
from dataplane.inbound import MAX_JSON_DEPTH, nests_deeper, parse_json, read_body


def arrays(depth: int) -> bytes:
    """An object whose field holds `depth - 1` nested arrays: `depth` levels in all."""
    return b'{"x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def objects(depth: int) -> bytes:
    return b'{"a": ' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("build", [arrays, objects])
def test_the_depth_limit_is_exact(build: object) -> None:
    assert callable(build)
    assert parse_json(build(MAX_JSON_DEPTH))
    with pytest.raises(BadRequest, match=f"nests deeper than {MAX_JSON_DEPTH} levels"):
        parse_json(build(MAX_JSON_DEPTH + 1))


@pytest.mark.parametrize(
    "raw", [b"[" * 100_000, b'{"a":' * 100_000, objects(5_000), arrays(990), b'{"x": ' + b"[" * 100_000]
)
def test_past_the_parsers_recursion_limit_is_a_bad_request_too(raw: bytes) -> None:
    with pytest.raises(BadRequest, match="nests deeper"):
        parse_json(raw)
    with pytest.raises(BadRequest, match="nests deeper"):  # media routes take JSON too (Deepgram's url)
        read_body("media", raw, "application/json", {}, {})


def test_many_shallow_brackets_are_fine() -> None:
    """More brackets than the limit only means the depth is checked, not that it is exceeded."""
    raw = json.dumps(
        {"messages": [{"role": "user", "content": [[]] * 3}] * 5_000, "s": "[[[[" * 500}
    ).encode()
    assert len(parse_json(raw)["messages"]) == 5_000


def test_whatever_is_accepted_can_be_re_serialised_from_deep_in_the_stack() -> None:
    """The gateway re-serialises a body it rewrites (json.dumps, which recurses): at the deepest
    accepted nesting this still works with most of the stack already used."""
    body = parse_json(arrays(MAX_JSON_DEPTH))

    def dump_at(depth: int) -> bytes:
        return dump_at(depth - 1) if depth else json.dumps(body).encode()

    assert dump_at(sys.getrecursionlimit() - MAX_JSON_DEPTH - 200) == arrays(MAX_JSON_DEPTH)


def test_other_parser_errors_are_bad_requests() -> None:
    for raw, fragment in [
        (b'{"n": 1' + b"0" * 5_000 + b"}", "4300 digits"),  # ValueError, not JSONDecodeError
        (b"\xff\xfe{", "parse"),
        (b"{not json", "parse"),
    ]:
        with pytest.raises(BadRequest, match=fragment):
            parse_json(raw)
    with pytest.raises(BadRequest, match="JSON object"):
        parse_json(b"[1]")


def test_decimals_stay_exact() -> None:
    assert parse_json(b'{"usd": 0.1}', parse_float=Decimal) == {"usd": Decimal("0.1")}


def test_nests_deeper_walks_without_recursion() -> None:
    deep: list[object] = []
    node = deep
    for _ in range(100_000):  # far past the recursion limit
        child: list[object] = []
        node.append(child)
        node = child
    assert nests_deeper(deep, 1_000) and not nests_deeper(deep, 100_001)
    four_levels = {"a": [1, {"b": []}]}
    assert not nests_deeper(four_levels, 4) and nests_deeper(four_levels, 3)
    assert not nests_deeper("text", 0)

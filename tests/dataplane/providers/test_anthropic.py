from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.providers.anthropic import MessagesParser
from dataplane.providers.usage import Usage


def pieces_of(data: bytes) -> Iterator[list[bytes]]:
    """Whole; in two at every split point; one byte at a time."""
    yield [data]
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]
    yield [data[i : i + 1] for i in range(len(data))]


def run(stream: bool, pieces: list[bytes]) -> tuple[bytes, Usage]:
    parser = MessagesParser(stream)
    forwarded = b"".join(parser.feed(piece) for piece in pieces) + parser.flush()
    return forwarded, parser.close()


def check_every_split(stream: bool, data: bytes, usage: Usage) -> None:
    for pieces in pieces_of(data):
        assert run(stream, pieces) == (data, usage), [len(p) for p in pieces[:2]]


def utf8(*parts: str) -> int:
    return sum(len(p.encode()) for p in parts)


MESSAGE_START = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message",'
    b'"role":"assistant","model":"claude-sonnet-4-20250514","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,'
    b'"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":1,'
    b'"service_tier":"standard"}}}\n\n'
)
TEXT_STREAM = (
    MESSAGE_START + b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b"event: ping\n"
    b'data: {"type": "ping"}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":"! \xc3\x87a va ? \xf0\x9f\x99\x82"}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":0}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
    b'"usage":{"output_tokens":15}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)
TEXT_BYTES = utf8("Hello", "! Ça va ? 🙂")


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_text_stream_every_split(eol: bytes) -> None:
    expected = Usage(25, 15, 0, 0, complete=True, delivered_text_bytes=TEXT_BYTES, **STANDARD)
    check_every_split(True, TEXT_STREAM.replace(b"\n", eol), expected)


def test_bytes_are_forwarded_as_soon_as_they_arrive() -> None:
    parser = MessagesParser(stream=True)
    for i in range(len(TEXT_STREAM)):
        assert parser.feed(TEXT_STREAM[i : i + 1]) == TEXT_STREAM[i : i + 1]
    assert parser.flush() == b""


def test_stream_cut_off_before_message_delta() -> None:
    cut = TEXT_STREAM.index(b"event: message_delta") + 10
    # Input and cache counts are known from message_start; the provisional output count is not used.
    expected = Usage(25, None, 0, 0, complete=False, delivered_text_bytes=TEXT_BYTES, **STANDARD)
    check_every_split(True, TEXT_STREAM[:cut], expected)


def test_stream_cut_off_after_message_delta() -> None:
    cut = TEXT_STREAM.index(b"event: message_stop")
    expected = Usage(25, 15, 0, 0, complete=False, delivered_text_bytes=TEXT_BYTES, **STANDARD)
    assert run(True, [TEXT_STREAM[:cut]]) == (TEXT_STREAM[:cut], expected)


def test_stream_that_ends_without_message_delta_uses_the_provisional_output() -> None:
    data = TEXT_STREAM.replace(TEXT_STREAM[TEXT_STREAM.index(b"event: message_delta") :], b"")
    data += b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    assert run(True, [data])[1] == Usage(
        25, 1, 0, 0, complete=True, delivered_text_bytes=TEXT_BYTES, **STANDARD
    )


# Extended thinking, a tool call, prompt caching, and a message_delta whose cumulative usage
# overwrites the input counts (as server tools make it do).
STANDARD: dict[str, Any] = {"cache_write_1h_tokens": 0, "service_tier": "standard"}

THINKING_TOOL_STREAM = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_01Aq9w938a90dw8q","type":"message","role":"assistant",'
    b'"model":"claude-opus-4-1-20250805","content":[],"stop_reason":null,"stop_sequence":null,"usage":'
    b'{"input_tokens":12,"cache_creation_input_tokens":1500,"cache_read_input_tokens":3000,"cache_creation":'
    b'{"ephemeral_5m_input_tokens":1500,"ephemeral_1h_input_tokens":0},"output_tokens":4,'
    b'"service_tier":"standard"}}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"",'
    b'"signature":""}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":'
    b'"The user wants the weather \xe2\x80\xa6"}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":'
    b'"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":0}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use",'
    b'"id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
    b'"partial_json":"{\\"location\\": \\"Z\xc3\xbc"}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
    b'"partial_json":"rich\\"}"}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":1}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":'
    b'{"input_tokens":2679,"cache_creation_input_tokens":null,"cache_read_input_tokens":3000,'
    b'"output_tokens":89,"output_tokens_details":{"thinking_tokens":61},'
    b'"server_tool_use":{"web_search_requests":1}}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)


def test_one_hour_cache_writes_and_web_searches_are_reported_apart() -> None:
    """`cache_creation_input_tokens` counts both lifetimes; the one-hour part is priced at its own rate."""
    body = (
        b'{"type":"message","content":[],"usage":{"input_tokens":50,"cache_creation_input_tokens":3000,'
        b'"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":1000,'
        b'"ephemeral_1h_input_tokens":2000},"output_tokens":7,"server_tool_use":{"web_search_requests":3},'
        b'"service_tier":"priority"}}'
    )
    usage = run(False, [body])[1]
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (1000, 2000)
    assert (usage.web_searches, usage.service_tier, usage.input_tokens) == (3, "priority", 50)


def test_thinking_tool_use_and_caching_stream_every_split() -> None:
    expected = Usage(
        input_tokens=2679,
        output_tokens=89,
        cached_input_tokens=3000,
        cache_write_tokens=1500,
        reasoning_tokens=61,
        cache_write_1h_tokens=0,
        web_searches=1,
        service_tier="standard",
        complete=True,
        delivered_text_bytes=utf8("The user wants the weather …", '{"location": "Zü', 'rich"}'),
    )
    check_every_split(True, THINKING_TOOL_STREAM, expected)


def test_error_event_is_passed_through() -> None:
    data = (
        MESSAGE_START + b"event: content_block_start\n"
        b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
        b"event: content_block_delta\n"
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}\n\n'
        b"event: error\n"
        b'data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    )
    check_every_split(True, data, Usage(25, None, 0, 0, complete=False, delivered_text_bytes=3, **STANDARD))


@pytest.mark.parametrize("value", [b'"25"', b"-1", b"true", b"25.0", b"null", b"{}"])
def test_bad_counts_are_not_reported(value: bytes) -> None:
    data = (
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":%s,'
        b'"cache_read_input_tokens":%s,"cache_creation_input_tokens":%s,"output_tokens":%s}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":%s,'
        b'"output_tokens_details":{"thinking_tokens":%s}}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    ) % ((value,) * 6)
    assert run(True, [data]) == (data, Usage(complete=True))


def test_later_non_null_values_overwrite_and_nulls_do_not() -> None:
    data = (
        b'data: {"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}\n\n'
        b'data: {"type":"message_delta","usage":{"output_tokens":7,"input_tokens":null}}\n\n'
        b'data: {"type":"message_delta","usage":{"output_tokens":9,"cache_read_input_tokens":4}}\n\n'
    )
    assert run(True, [data])[1] == Usage(input_tokens=5, output_tokens=9, cached_input_tokens=4)


def test_garbage_stream_does_not_raise() -> None:
    data = (
        b"event: message_start\ndata: {not json\n\n"
        b'event: message_start\ndata: {"type":"message_start","message":[]}\n\n'
        b'data: {"type":["message_delta"],"usage":{"output_tokens":3}}\n\n'
        b'event: message_delta\ndata: {"usage":{"output_tokens":3}}\n\n'
        b'data: {"type":"content_block_delta","delta":{"text":7,"thinking":"\\udfff"}}\n\n'
        b"data: " + b"{" * 100_000 + b"\n\n"
        b"\x00\xff\n\r\n"
    )
    assert run(True, [data]) == (data, Usage(output_tokens=3, delivered_text_bytes=3))


MESSAGE_BODY = (
    b'{"id":"msg_01HCDu5LRGeP2o7s2xGmxyx8","type":"message","role":"assistant","model":"claude-opus-4-1-20250805",'
    b'"content":[{"type":"thinking","thinking":"Hmm.","signature":"EqQBCgIYAhIM"},{"type":"text","text":'
    b'"Voil\xc3\xa0."},{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{"city":"Z\xc3\xbcrich"}}],'
    b'"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":310,"cache_creation_input_tokens":0,'
    b'"cache_read_input_tokens":2048,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},'
    b'"output_tokens":120,"service_tier":"standard","output_tokens_details":{"thinking_tokens":40}}}'
)


def test_body_every_split() -> None:
    expected = Usage(
        310,
        120,
        2048,
        0,
        40,
        complete=True,
        delivered_text_bytes=utf8("Hmm.", "Voilà.", '{"city":"Zürich"}'),
        **STANDARD,
    )
    check_every_split(False, MESSAGE_BODY, expected)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
            Usage(complete=True),
        ),
        (MESSAGE_BODY[:-20], Usage()),
        (b"", Usage()),
    ],
)
def test_body_without_usage(body: bytes, expected: Usage) -> None:
    assert run(False, [body]) == (body, expected)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


FRAGMENTS = [
    MESSAGE_START,
    TEXT_STREAM[-300:],
    THINKING_TOOL_STREAM[-500:],
    b"\r",
    b"\r\n",
    b"\n\n",
    b"\xe2\x80",
]


@settings(max_examples=300, deadline=None, database=None)
@given(
    data=st.one_of(st.binary(max_size=2000), st.lists(st.sampled_from(FRAGMENTS), max_size=10).map(b"".join)),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=10),
    stream=st.booleans(),
)
def test_random_bytes_are_forwarded_unchanged(data: bytes, cuts: list[int], stream: bool) -> None:
    forwarded, usage = run(stream, split(data, cuts))
    assert forwarded == data
    assert run(stream, [data])[1] == usage

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.providers.sse import SSEEvent, SSESplitter


def pieces_of(data: bytes) -> Iterator[list[bytes]]:
    """Whole; in two at every split point; one byte at a time."""
    yield [data]
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]
    yield [data[i : i + 1] for i in range(len(data))]


def run(pieces: list[bytes], max_event_bytes: int = 1 << 20) -> tuple[list[SSEEvent], SSEEvent | None]:
    splitter = SSESplitter(max_event_bytes)
    events = [event for piece in pieces for event in splitter.feed(piece)]
    return events, splitter.flush_event()


def joined(events: list[SSEEvent], last: SSEEvent | None) -> bytes:
    return b"".join(e.raw for e in events) + (last.raw if last else b"")


# Two events as an OpenAI-compatible server writes them, one with a name, a comment and
# a multi-line data field, and non-ASCII text that a split can cut in the middle of.
STREAM = (
    b": keep-alive\n"
    b"\n"
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","delta":"Caf\xc3\xa9 \xf0\x9f\x91\x8b"}\n'
    b"\n"
    b"id: 7\n"
    b"retry: 1000\n"
    b"data: first\n"
    b"data:second\n"
    b"data\n"
    b"data:  two spaces\n"
    b"\n"
)
EXPECTED = [
    SSEEvent(b": keep-alive\n\n"),
    SSEEvent(
        b"event: response.output_text.delta\n"
        b'data: {"type":"response.output_text.delta","delta":"Caf\xc3\xa9 \xf0\x9f\x91\x8b"}\n\n',
        "response.output_text.delta",
        '{"type":"response.output_text.delta","delta":"Café 👋"}',
    ),
    SSEEvent(
        b"id: 7\nretry: 1000\ndata: first\ndata:second\ndata\ndata:  two spaces\n\n",
        None,
        "first\nsecond\n\n two spaces",
    ),
]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_every_split_gives_the_same_events_and_bytes(eol: bytes) -> None:
    data = STREAM.replace(b"\n", eol)
    expected = [SSEEvent(e.raw.replace(b"\n", eol), e.event, e.data) for e in EXPECTED]
    for pieces in pieces_of(data):
        events, last = run(pieces)
        if eol == b"\r":  # the final \r might yet be followed by \n: the last event waits for the end
            assert last is not None
            events.append(last)
        else:
            assert last is None
        assert events == expected, [len(p) for p in pieces[:2]]


def test_crlf_split_between_cr_and_lf_stays_in_the_event() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: a\r\n\r") == []
    assert splitter.feed(b"\ndata: b\r\n\r\n") == [
        SSEEvent(b"data: a\r\n\r\n", None, "a"),
        SSEEvent(b"data: b\r\n\r\n", None, "b"),
    ]


def test_lone_cr_ends_the_event_once_the_next_byte_is_known() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: a\r\r") == []
    assert splitter.feed(b"d") == [SSEEvent(b"data: a\r\r", None, "a")]
    assert splitter.flush() == b"d"


def test_mixed_line_endings() -> None:
    events, last = run([b"data: a\rdata: b\r\ndata: c\n\r\n:x\r\r"])
    assert events == [SSEEvent(b"data: a\rdata: b\r\ndata: c\n\r\n", None, "a\nb\nc")]
    assert last == SSEEvent(b":x\r\r")


def test_blank_lines_between_events_are_kept_as_empty_events() -> None:
    events, _ = run([b"\n\ndata: x\n\n\n"])
    assert events == [SSEEvent(b"\n"), SSEEvent(b"\n"), SSEEvent(b"data: x\n\n", None, "x"), SSEEvent(b"\n")]


def test_event_name_and_data_fields() -> None:
    events, _ = run([b"event:ping\ndata: {}\nevent: message_stop\n\n"])
    assert events == [SSEEvent(b"event:ping\ndata: {}\nevent: message_stop\n\n", "message_stop", "{}")]


def test_bom_at_stream_start_is_ignored_for_parsing_but_forwarded() -> None:
    data = b"\xef\xbb\xbfdata: x\n\n\xef\xbb\xbfdata: y\n\n"
    events, _ = run([data])
    assert [e.data for e in events] == ["x", ""]
    assert joined(events, None) == data


def test_invalid_utf8_is_replaced_not_raised() -> None:
    events, _ = run([b"data: \xff\xfe\xc3\n\n"])
    assert events == [SSEEvent(b"data: \xff\xfe\xc3\n\n", None, "\ufffd\ufffd\ufffd")]


def test_flush_returns_the_unfinished_event_and_resets() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: one\n\ndata: tw") == [SSEEvent(b"data: one\n\n", None, "one")]
    assert splitter.flush() == b"data: tw"
    assert splitter.flush() == b""
    assert splitter.feed(b"data: three\n\n") == [SSEEvent(b"data: three\n\n", None, "three")]


@pytest.mark.parametrize(
    ("tail", "data"),
    [
        (b"data: [DONE]", "[DONE]"),
        (b"data: [DONE]\n", "[DONE]"),
        (b"data: x\r\n\r", "x"),
        (b"event: e\r", ""),
    ],
)
def test_flush_event_parses_the_unterminated_tail_leniently(tail: bytes, data: str) -> None:
    splitter = SSESplitter()
    assert splitter.feed(tail) == []
    event = splitter.flush_event()
    assert event is not None
    assert (event.raw, event.data, event.overflow) == (tail, data, False)
    assert splitter.flush_event() is None


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_an_event_over_the_cap_is_forwarded_unparsed_and_the_next_one_parsed(eol: bytes) -> None:
    big = b"event: big\ndata: " + b"x" * 50 + b"\ndata: " + b"y" * 50 + b"\n\n"
    data = (big + b"data: small\n\n:\n\n").replace(b"\n", eol)
    for pieces in pieces_of(data):
        events, last = run(pieces, max_event_bytes=64)
        assert joined(events, last) == data
        if last is not None:
            events.append(last)
        assert all(e.overflow and e.event is None and not e.data for e in events[:-2])
        assert events[-2:] == [SSEEvent(b"data: small" + eol * 2, None, "small"), SSEEvent(b":" + eol * 2)]


def test_overflow_depends_on_event_size_not_on_how_it_arrives() -> None:
    exact = b"data: " + b"x" * 54 + b"\r\n\r\n"  # 64 bytes
    for pieces in pieces_of(exact):
        assert run(pieces, max_event_bytes=64) == ([SSEEvent(exact, None, "x" * 54)], None)
        events, last = run(pieces, max_event_bytes=63)
        assert last is None
        assert all(e.overflow for e in events) and joined(events, None) == exact


def test_held_bytes_stay_bounded_while_overflowing() -> None:
    splitter = SSESplitter(max_event_bytes=1024)
    forwarded = 0
    for _ in range(1000):
        forwarded += sum(len(e.raw) for e in splitter.feed(b"data: " + b"y" * 4000 + b"\n"))
        assert len(splitter._buf) <= 2
    forwarded += sum(len(e.raw) for e in splitter.feed(b"\n"))
    assert forwarded == 1000 * 4007 + 1
    assert splitter.feed(b"data: z\n\n") == [SSEEvent(b"data: z\n\n", None, "z")]


def test_overflow_piece_at_flush() -> None:
    splitter = SSESplitter(max_event_bytes=8)
    events = splitter.feed(b"data: 0123456789")
    last = splitter.flush_event()
    assert last is not None and last.overflow
    assert joined(events, last) == b"data: 0123456789"


def normalised(events: list[SSEEvent], last: SSEEvent | None) -> list[SSEEvent]:
    """Adjacent overflow pieces merged: where an overflowing event is cut depends on the input split."""
    out: list[SSEEvent] = []
    for event in [*events, *([last] if last else [])]:
        if event.overflow and out and out[-1].overflow:
            out[-1] = SSEEvent(out[-1].raw + event.raw, overflow=True)
        else:
            out.append(event)
    return out


TOKENS = [
    b"\n",
    b"\r",
    b"\r\n",
    b"data: ",
    b"data:",
    b"event: x",
    b":",
    b"{}",
    b"\xc3\xa9",
    b"\xff",
    b"a",
    b" ",
]


@settings(max_examples=400, deadline=None, database=None)
@given(
    data=st.one_of(st.binary(max_size=300), st.lists(st.sampled_from(TOKENS), max_size=80).map(b"".join)),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=8),
    cap=st.sampled_from([1, 4, 16, 1 << 20]),
)
def test_random_input_is_preserved_and_split_invariant(data: bytes, cuts: list[int], cap: int) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    events, last = run(pieces, cap)
    assert joined(events, last) == data
    assert normalised(events, last) == normalised(*run([data], cap))


LINES = [
    b"data: {}",
    b"data: x",
    b"data:y",
    b"event: e",
    b": c",
    b"data: \xc3\xa9",
    b"data: a\rb",
    b"\xef\xbb\xbfdata: bom",
]
LINES.append(b"data: " + b"z" * 40)


@settings(max_examples=300, deadline=None, database=None)
@given(
    events=st.lists(st.lists(st.sampled_from(LINES), max_size=3), max_size=12),
    cap=st.sampled_from([4, 16, 1 << 20]),
)
def test_events_fed_one_chunk_each_parse_as_when_fed_whole(events: list[list[bytes]], cap: int) -> None:
    """The usual upstream chunk is one whole `data:` event, which has a fast path."""
    chunks = [b"".join(line + b"\n" for line in lines) + b"\n" for lines in events]
    data = b"".join(chunks)
    one_each = run(chunks, cap)
    assert joined(*one_each) == data
    assert normalised(*one_each) == normalised(*run([data], cap))


def test_a_bom_after_the_first_event_is_not_taken_for_one() -> None:
    chunks = [b"data: x\n\n", b"\xef\xbb\xbfdata: bom\n\n"]
    assert normalised(*run(chunks)) == normalised(*run([b"".join(chunks)]))


@settings(max_examples=400, deadline=None, database=None)
@given(
    chunks=st.lists(
        st.one_of(
            st.lists(st.sampled_from(LINES), max_size=3).map(
                lambda lines: b"".join(x + b"\n" for x in lines)
            ),
            st.lists(st.sampled_from(TOKENS), max_size=12).map(b"".join),
        ).map(lambda chunk: chunk + b"\n"),
        max_size=10,
    ),
    cap=st.sampled_from([4, 16, 1 << 20]),
)
def test_a_skipped_chunk_is_whole_events_and_the_splitter_goes_on_as_if_fed(
    chunks: list[bytes], cap: int
) -> None:
    """`skip` passes a chunk by unsplit only when it is whole events from an event's start:
    a fresh splitter reads it alone as the fed one did, and what follows parses the same."""
    both, fed = SSESplitter(cap), SSESplitter(cap)
    for chunk in chunks:
        expected = fed.feed(chunk)
        if not both.skip(chunk):
            assert both.feed(chunk) == expected
            continue
        alone = SSESplitter(cap)
        assert normalised(alone.feed(chunk), alone.flush_event()) == normalised(expected, None)
    assert both.flush_event() == fed.flush_event()


@pytest.mark.parametrize(
    ("chunk", "skipped"),
    [
        (b'data: {"a":1}\n\n', True),
        (b"data: x\n\ndata: \n\n: comment\nevent: e\ndata: y\n\n", True),
        (b"data: x\r\n\n", True),
        (b"data: x\n\ndata: y", False),  # the second event is not whole
        (b"data: x\n", False),
        (b"data: x\r\n\r\n", False),  # (it ends an event too, but is left to feed)
        (b": comment\n\n", False),  # (a chunk that does not start `data: `, in case it is a BOM)
        (b"\xef\xbb\xbfdata: x\n\n", False),
        (b"", False),
    ],
)
def test_skip_takes_only_chunks_of_whole_events(chunk: bytes, skipped: bool) -> None:
    assert SSESplitter().skip(chunk) is skipped


def test_skip_leaves_a_chunk_to_feed_while_an_event_is_pending() -> None:
    splitter = SSESplitter(max_event_bytes=16)
    splitter.feed(b"data: part")
    assert not splitter.skip(b"data: x\n\n")  # it would end the pending event
    assert splitter.feed(b"\n\n") == [SSEEvent(b"data: part\n\n", None, "part")]
    assert splitter.feed(b"data: " + b"z" * 20)[0].overflow  # inside an event over the cap
    assert not splitter.skip(b"data: x\n\n")
    assert splitter.feed(b"\n\n")[0].overflow
    assert splitter.skip(b"data: x\n\n")

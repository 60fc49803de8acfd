from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.providers.jsonbody import MAX_BODY_BYTES, tail_object
from dataplane.providers.openai import UNCOUNTED_BYTES, ChatParser, EmbeddingsParser, ResponsesParser
from dataplane.providers.usage import Usage, UsageParser

Factory = Callable[[], UsageParser]


def pieces_of(data: bytes) -> Iterator[list[bytes]]:
    """Whole; in two at every split point; one byte at a time."""
    yield [data]
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]
    yield [data[i : i + 1] for i in range(len(data))]


def run(factory: Factory, pieces: list[bytes]) -> tuple[bytes, Usage]:
    parser = factory()
    forwarded = b"".join(parser.feed(piece) for piece in pieces) + parser.flush()
    return forwarded, parser.close()


def check_every_split(factory: Factory, data: bytes, forwarded: bytes, usage: Usage) -> None:
    for pieces in pieces_of(data):
        assert run(factory, pieces) == (forwarded, usage), [len(p) for p in pieces[:2]]


def utf8(*parts: str) -> int:
    return sum(len(p.encode()) for p in parts)


def streamed(usage: Usage) -> Usage:
    """What a streamed chat answer reports: the text it delivered is counted only when no
    output count came (the one case billing reads it); see text_without_counts below."""
    return usage if usage.output_tokens is None else usage._replace(delivered_text_bytes=0)


# --- chat completions, streamed, with stream_options.include_usage ---------------------------

CHAT_USAGE_EVENT = (
    b'data: {"id":"chatcmpl-C1tq8mJ0yXgQ2d7kVbR4wNf9Lz3Ha","object":"chat.completion.chunk","created":1754489012,'
    b'"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_560af6e559",'
    b'"choices":[],"usage":{"prompt_tokens":21,"completion_tokens":9,"total_tokens":30,'
    b'"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
    b'"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,'
    b'"rejected_prediction_tokens":0}},"obfuscation":"Jx0Y5r"}\n\n'
)
CHAT_STREAM = (
    b'data: {"id":"chatcmpl-C1tq8mJ0yXgQ2d7kVbR4wNf9Lz3Ha","object":"chat.completion.chunk","created":1754489012,'
    b'"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_560af6e559",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,'
    b'"finish_reason":null}],"usage":null,"obfuscation":"0sQ4"}\n\n'
    b'data: {"id":"chatcmpl-C1tq8mJ0yXgQ2d7kVbR4wNf9Lz3Ha","object":"chat.completion.chunk","created":1754489012,'
    b'"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_560af6e559",'
    b'"choices":[{"index":0,"delta":{"content":"Bonjour"},"logprobs":null,"finish_reason":null}],'
    b'"usage":null,"obfuscation":"Yq1"}\n\n'
    b'data: {"id":"chatcmpl-C1tq8mJ0yXgQ2d7kVbR4wNf9Lz3Ha","object":"chat.completion.chunk","created":1754489012,'
    b'"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_560af6e559",'
    b'"choices":[{"index":0,"delta":{"content":" \xf0\x9f\x91\x8b, \xc3\xa7a"},"logprobs":null,'
    b'"finish_reason":null}],"usage":null,"obfuscation":"mT"}\n\n'
    b'data: {"id":"chatcmpl-C1tq8mJ0yXgQ2d7kVbR4wNf9Lz3Ha","object":"chat.completion.chunk","created":1754489012,'
    b'"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_560af6e559",'
    b'"choices":[{"index":0,"delta":{"content":" va ?"},"logprobs":null,"finish_reason":null}],'
    b'"usage":null,"obfuscation":"Q2pe"}\n\n'
    b'data: {"id":"chatcmpl-C1tq8mJ0yXgQ2d7kVbR4wNf9Lz3Ha","object":"chat.completion.chunk","created":1754489012,'
    b'"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_560af6e559",'
    b'"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null,'
    b'"obfuscation":"a"}\n\n' + CHAT_USAGE_EVENT + b"data: [DONE]\n\n"
)
CHAT_TEXT = utf8("Bonjour", " 👋, ça", " va ?")
CHAT_USAGE = Usage(
    input_tokens=21,
    output_tokens=9,
    cached_input_tokens=0,
    reasoning_tokens=0,
    service_tier="default",
    complete=True,
    delivered_text_bytes=CHAT_TEXT,
)


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_chat_stream_every_split(eol: bytes) -> None:
    data = CHAT_STREAM.replace(b"\n", eol)
    check_every_split(lambda: ChatParser(stream=True), data, data, streamed(CHAT_USAGE))


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_chat_stream_strips_only_the_injected_usage_event(eol: bytes) -> None:
    data = CHAT_STREAM.replace(b"\n", eol)
    stripped = data.replace(CHAT_USAGE_EVENT.replace(b"\n", eol), b"")
    assert len(stripped) < len(data)
    check_every_split(
        lambda: ChatParser(stream=True, strip_usage_chunk=True), data, stripped, streamed(CHAT_USAGE)
    )


def test_chat_stream_without_stripping_forwards_bytes_as_soon_as_they_arrive() -> None:
    parser = ChatParser(stream=True)
    for i in range(len(CHAT_STREAM)):
        assert parser.feed(CHAT_STREAM[i : i + 1]) == CHAT_STREAM[i : i + 1]
    assert parser.flush() == b""
    assert parser.close() == streamed(CHAT_USAGE)


def test_chat_stream_strip_forwards_each_event_once_whole() -> None:
    parser = ChatParser(stream=True, strip_usage_chunk=True)
    first = CHAT_STREAM.index(b"\n\n") + 2
    assert parser.feed(CHAT_STREAM[: first - 1]) == b""
    assert parser.feed(CHAT_STREAM[first - 1 : first + 5]) == CHAT_STREAM[:first]


def test_chat_stream_cut_off_mid_way() -> None:
    cut = CHAT_STREAM.index(b'{"content":" va ?"}') + 5  # inside the fourth chunk
    expected = Usage(delivered_text_bytes=utf8("Bonjour", " 👋, ça"))
    for strip in (False, True):
        check_every_split(partial(ChatParser, True, strip), CHAT_STREAM[:cut], CHAT_STREAM[:cut], expected)


def test_a_last_event_without_its_blank_line_is_counted() -> None:
    """A stream that ends right after a whole chunk's line, the blank line missing: that chunk
    is still read (leniently, at the flush), and its text counted with the others."""
    last = CHAT_STREAM.index(b'{"content":" va ?"}')
    data = CHAT_STREAM[: CHAT_STREAM.index(b"\n\n", last) + 1]
    expected = Usage(delivered_text_bytes=utf8("Bonjour", " 👋, ça", " va ?"))
    for strip in (False, True):
        check_every_split(partial(ChatParser, True, strip), data, data, expected)


def test_chat_stream_without_usage_chunk_reports_nothing_but_completes() -> None:
    data = CHAT_STREAM.replace(CHAT_USAGE_EVENT, b"")
    expected = Usage(complete=True, delivered_text_bytes=CHAT_TEXT)
    assert run(lambda: ChatParser(stream=True, strip_usage_chunk=True), [data]) == (data, expected)


def test_chat_stream_usage_chunk_at_the_very_end_without_blank_line() -> None:
    data = CHAT_STREAM[: CHAT_STREAM.index(CHAT_USAGE_EVENT)] + CHAT_USAGE_EVENT.rstrip(b"\n")
    expected = Usage(
        21, 9, 0, None, 0, complete=False, delivered_text_bytes=CHAT_TEXT, service_tier="default"
    )
    expected = streamed(expected)
    check_every_split(lambda: ChatParser(stream=True), data, data, expected)
    forwarded, usage = run(lambda: ChatParser(stream=True, strip_usage_chunk=True), [data])
    assert (forwarded, usage) == (data[: -len(CHAT_USAGE_EVENT) + 2], expected)


# Prompt caching and reasoning on an o-series model; reasoning text as DeepSeek/vLLM send it.
REASONING_STREAM = (
    b'data: {"id":"chatcmpl-C1u0bTq7","object":"chat.completion.chunk","created":1754489640,'
    b'"model":"o4-mini-2025-04-16","system_fingerprint":null,"choices":[{"index":0,"delta":'
    b'{"role":"assistant","content":"","refusal":null},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-C1u0bTq7","object":"chat.completion.chunk","created":1754489640,'
    b'"model":"o4-mini-2025-04-16","system_fingerprint":null,"choices":[{"index":0,"delta":'
    b'{"reasoning_content":"Think \xe2\x80\x94 "},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-C1u0bTq7","object":"chat.completion.chunk","created":1754489640,'
    b'"model":"o4-mini-2025-04-16","system_fingerprint":null,"choices":[{"index":0,"delta":'
    b'{"reasoning":"hard."},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-C1u0bTq7","object":"chat.completion.chunk","created":1754489640,'
    b'"model":"o4-mini-2025-04-16","system_fingerprint":null,"choices":[{"index":0,"delta":'
    b'{"content":"42"},"finish_reason":"stop"}],"usage":null}\n\n'
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"id":"chatcmpl-C1u0bTq7","object":"chat.completion.chunk","created":1754489640,'
    b'"model":"o4-mini-2025-04-16","system_fingerprint":null,"choices":[],"usage":{"prompt_tokens":2006,'
    b'"completion_tokens":530,"total_tokens":2536,"prompt_tokens_details":{"cached_tokens":1920,'
    b'"cache_write_tokens":64,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":448,'
    b'"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}\n\n'
    b"data: [DONE]\n\n"
)


def test_chat_stream_caching_and_reasoning() -> None:
    expected = Usage(
        input_tokens=2006 - 1920 - 64,
        output_tokens=530,
        cached_input_tokens=1920,
        cache_write_tokens=64,
        reasoning_tokens=448,
        complete=True,
        delivered_text_bytes=utf8("Think — ", "hard.", "42"),
    )
    check_every_split(lambda: ChatParser(stream=True), REASONING_STREAM, REASONING_STREAM, streamed(expected))


TOOL_STREAM = (
    b'data: {"id":"chatcmpl-C1u5x","object":"chat.completion.chunk","created":1754489911,"model":"gpt-4.1-2025-04-14",'
    b'"system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{"role":"assistant","content":null,'
    b'"tool_calls":[{"index":0,"id":"call_Qz5uKp","type":"function","function":{"name":"get_weather",'
    b'"arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-C1u5x","object":"chat.completion.chunk","created":1754489911,"model":"gpt-4.1-2025-04-14",'
    b'"system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
    b'"function":{"arguments":"{\\"city\\":"}}]},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-C1u5x","object":"chat.completion.chunk","created":1754489911,"model":"gpt-4.1-2025-04-14",'
    b'"system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
    b'"function":{"arguments":"\\"Z\xc3\xbcrich\\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-C1u5x","object":"chat.completion.chunk","created":1754489911,"model":"gpt-4.1-2025-04-14",'
    b'"system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{},"logprobs":null,'
    b'"finish_reason":"tool_calls"}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-C1u5x","object":"chat.completion.chunk","created":1754489911,"model":"gpt-4.1-2025-04-14",'
    b'"system_fingerprint":"fp_b3f1157249","choices":[],"usage":{"prompt_tokens":83,"completion_tokens":17,'
    b'"total_tokens":100,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
    b'"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,'
    b'"rejected_prediction_tokens":0}}}\n\n'
    b"data: [DONE]\n\n"
)


def test_chat_stream_tool_call_arguments_count_as_delivered() -> None:
    expected = Usage(83, 17, 0, None, 0, complete=True, delivered_text_bytes=utf8('{"city":', '"Zürich"}'))
    check_every_split(lambda: ChatParser(stream=True), TOOL_STREAM, TOOL_STREAM, streamed(expected))


# Moonshot puts the usage in choices[0].usage of the last chunk; no empty-choices chunk.
MOONSHOT_STREAM = (
    b'data: {"id":"chatcmpl-68903b8f1c0e","object":"chat.completion.chunk","created":1754282895,'
    b'"model":"kimi-k2-0711-preview","choices":[{"index":0,"delta":{"role":"assistant","content":""},'
    b'"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-68903b8f1c0e","object":"chat.completion.chunk","created":1754282895,'
    b'"model":"kimi-k2-0711-preview","choices":[{"index":0,"delta":{"content":"\xe4\xbd\xa0\xe5\xa5\xbd"},'
    b'"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-68903b8f1c0e","object":"chat.completion.chunk","created":1754282895,'
    b'"model":"kimi-k2-0711-preview","choices":[{"index":0,"delta":{},"finish_reason":"stop",'
    b'"usage":{"prompt_tokens":8,"completion_tokens":11,"total_tokens":19,"cached_tokens":0}}]}\n\n'
    b"data: [DONE]\n\n"
)


def test_chat_stream_moonshot_usage_in_choices() -> None:
    # moonshot-v1's top-level cached_tokens is its cache-hit count (0 here).
    expected = Usage(8, 11, 0, complete=True, delivered_text_bytes=utf8("你好"))
    check_every_split(lambda: ChatParser(True, True), MOONSHOT_STREAM, MOONSHOT_STREAM, streamed(expected))


def test_chat_body_moonshot_top_level_cached_tokens() -> None:
    body = b'{"choices":[],"usage":{"prompt_tokens":80,"completion_tokens":3,"total_tokens":83,"cached_tokens":64}}'
    assert run(lambda: ChatParser(False), [body])[1] == Usage(16, 3, 64, complete=True)


# DeepSeek splits the prompt itself: hits at the cached rate, misses at the full rate. It also
# repeats the hits in prompt_tokens_details.cached_tokens, which must not be subtracted twice.
DEEPSEEK_STREAM = (
    b'data: {"id":"9f1c7b0e-3a4d","object":"chat.completion.chunk","created":1754491000,'
    b'"model":"deepseek-v4-flash","system_fingerprint":"fp_feb633d1f5_prod0820_fp8_kvcache",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"9f1c7b0e-3a4d","object":"chat.completion.chunk","created":1754491000,'
    b'"model":"deepseek-v4-flash","system_fingerprint":"fp_feb633d1f5_prod0820_fp8_kvcache",'
    b'"choices":[{"index":0,"delta":{"content":null,"reasoning_content":"Hmm."},"logprobs":null,'
    b'"finish_reason":null}]}\n\n'
    b'data: {"id":"9f1c7b0e-3a4d","object":"chat.completion.chunk","created":1754491000,'
    b'"model":"deepseek-v4-flash","system_fingerprint":"fp_feb633d1f5_prod0820_fp8_kvcache",'
    b'"choices":[{"index":0,"delta":{"content":"\xe4\xbd\xa0\xe5\xa5\xbd"},"logprobs":null,'
    b'"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"9f1c7b0e-3a4d","object":"chat.completion.chunk","created":1754491000,'
    b'"model":"deepseek-v4-flash","system_fingerprint":"fp_feb633d1f5_prod0820_fp8_kvcache","choices":[],'
    b'"usage":{"prompt_tokens":1500,"completion_tokens":40,"total_tokens":1540,'
    b'"prompt_tokens_details":{"cached_tokens":1280},"completion_tokens_details":{"reasoning_tokens":30},'
    b'"prompt_cache_hit_tokens":1280,"prompt_cache_miss_tokens":220}}\n\n'
    b"data: [DONE]\n\n"
)
DEEPSEEK_USAGE = Usage(
    input_tokens=220,
    output_tokens=40,
    cached_input_tokens=1280,
    reasoning_tokens=30,
    complete=True,
    delivered_text_bytes=utf8("Hmm.", "你好"),
)


def test_chat_stream_deepseek_cache_hit_and_miss_every_split() -> None:
    stripped = DEEPSEEK_STREAM.replace(DEEPSEEK_STREAM.split(b"\n\n")[3] + b"\n\n", b"")
    check_every_split(lambda: ChatParser(True), DEEPSEEK_STREAM, DEEPSEEK_STREAM, streamed(DEEPSEEK_USAGE))
    check_every_split(lambda: ChatParser(True, True), DEEPSEEK_STREAM, stripped, streamed(DEEPSEEK_USAGE))


def test_chat_stream_deepseek_cut_off_before_its_usage() -> None:
    cut = DEEPSEEK_STREAM.index(b'"choices":[],')
    expected = Usage(delivered_text_bytes=utf8("Hmm.", "你好"))
    check_every_split(lambda: ChatParser(True), DEEPSEEK_STREAM[:cut], DEEPSEEK_STREAM[:cut], expected)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (b'"prompt_tokens":100,"prompt_cache_hit_tokens":60,"prompt_cache_miss_tokens":40', Usage(40, 5, 60)),
        (b'"prompt_tokens":100,"prompt_cache_hit_tokens":60', Usage(40, 5, 60)),  # miss derived
        (b'"prompt_tokens":100,"prompt_cache_miss_tokens":100', Usage(100, 5, 0)),  # hit derived
        (b'"prompt_cache_hit_tokens":7', Usage(None, 5, 7)),  # no prompt: the miss is unknown
    ],
)
def test_chat_body_deepseek_hit_and_miss(usage: bytes, expected: Usage) -> None:
    body = b'{"choices":[],"usage":{' + usage + b',"completion_tokens":5}}'
    assert run(lambda: ChatParser(False), [body])[1] == expected._replace(complete=True)


# Mistral: no stream_options is sent; the finishing chunk carries the usage anyway.
MISTRAL_STREAM = (
    b'data: {"id":"3f6e2f5c8b2a4a1e","object":"chat.completion.chunk","created":1754492000,'
    b'"model":"mistral-small-latest","choices":[{"index":0,"delta":{"role":"assistant","content":""},'
    b'"finish_reason":null}]}\n\n'
    b'data: {"id":"3f6e2f5c8b2a4a1e","object":"chat.completion.chunk","created":1754492000,'
    b'"model":"mistral-small-latest","choices":[{"index":0,"delta":{"content":"Salut !"},"finish_reason":null}]}\n\n'
    b'data: {"id":"3f6e2f5c8b2a4a1e","object":"chat.completion.chunk","created":1754492000,'
    b'"model":"mistral-small-latest","choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":9,"total_tokens":13,"completion_tokens":4}}\n\n'
    b"data: [DONE]\n\n"
)


def test_chat_stream_mistral_usage_on_the_finishing_chunk_is_read_and_forwarded() -> None:
    expected = Usage(9, 4, complete=True, delivered_text_bytes=utf8("Salut !"))
    # The gateway strips only when it injected stream_options, never for Mistral; and a chunk with
    # choices is never stripped anyway.
    for strip in (False, True):
        check_every_split(
            partial(ChatParser, True, strip), MISTRAL_STREAM, MISTRAL_STREAM, streamed(expected)
        )


@pytest.mark.parametrize(
    ("usage", "output"),
    [
        # xAI: reasoning outside completion_tokens, total = prompt + completion + reasoning.
        (b'"prompt_tokens":32,"completion_tokens":9,"total_tokens":135,', 9 + 94),
        # OpenAI: reasoning inside completion_tokens, total = prompt + completion.
        (b'"prompt_tokens":32,"completion_tokens":103,"total_tokens":135,', 103),
        # No total to tell by: completion as reported.
        (b'"prompt_tokens":32,"completion_tokens":9,', 9),
    ],
)
def test_chat_xai_reasoning_outside_completion_is_output(usage: bytes, output: int) -> None:
    body = (
        b'{"choices":[],"usage":{' + usage + b'"prompt_tokens_details":{"cached_tokens":0,"text_tokens":32},'
        b'"completion_tokens_details":{"reasoning_tokens":94,"audio_tokens":0},"num_sources_used":0}}'
    )
    assert run(lambda: ChatParser(False), [body])[1] == Usage(32, output, 0, None, 94, complete=True)


def test_chat_stream_keeps_the_last_usage_and_never_strips_non_empty_choices() -> None:
    # Mistral-style: usage on the last content chunk, then a later (cumulative) report.
    data = (
        b'data: {"id":"a","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}],"usage":null}\n\n'
        b'data: {"id":"a","choices":[{"index":0,"delta":{"content":"y"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":10,"completion_tokens":1}}\n\n'
        b'data: {"id":"a","choices":[{"index":0,"delta":{},"usage":{"prompt_tokens":10,"completion_tokens":2}}]}\n\n'
        b'data: {"id":"a","choices":[],"usage":null}\n\n'
    )
    expected = Usage(input_tokens=10, output_tokens=2)
    check_every_split(lambda: ChatParser(True, True), data, data, expected)


def without_counts(stream: bytes) -> bytes:
    """The stream as a provider that never reports usage sends it: every `usage` removed."""
    events = []
    for event in stream.split(b"\n\n")[:-1]:
        if event.startswith(b"data: {"):
            chunk = json.loads(event[6:])
            chunk.pop("usage", None)
            for choice in chunk.get("choices") or []:
                choice.pop("usage", None)
            event = b"data: " + json.dumps(chunk, ensure_ascii=False).encode()
        events.append(event + b"\n\n")
    return b"".join(events)


@pytest.mark.parametrize(
    ("stream", "text"),
    [
        (CHAT_STREAM, CHAT_TEXT),
        (REASONING_STREAM, utf8("Think — ", "hard.", "42")),
        (TOOL_STREAM, utf8('{"city":', '"Zürich"}')),
        (MOONSHOT_STREAM, utf8("你好")),
        (DEEPSEEK_STREAM, utf8("Hmm.", "你好")),
        (MISTRAL_STREAM, utf8("Salut !")),
    ],
    ids=["chat", "reasoning", "tool-call", "moonshot", "deepseek", "mistral"],
)
def test_text_without_counts_is_counted_for_the_bill(stream: bytes, text: int) -> None:
    """With no output count, billing estimates the output from the text delivered (content,
    reasoning, tool arguments): all of it is counted, however the stream was split."""
    data = without_counts(stream)
    assert b'"usage"' not in data
    for strip in (False, True):
        check_every_split(
            partial(ChatParser, True, strip), data, data, Usage(complete=True, delivered_text_bytes=text)
        )


def test_a_long_stream_holds_at_most_a_bound_of_uncounted_text() -> None:
    event = b'data: {"id":"a","choices":[{"index":0,"delta":{"content":"h\xc3\xa9llo "},"finish_reason":null}]}\n\n'
    events = 3 * UNCOUNTED_BYTES // len(event)
    for reported in (False, True):
        parser = ChatParser(True, True)
        for _ in range(events):
            parser.feed(event)
            assert parser._uncounted_bytes <= UNCOUNTED_BYTES
        if reported:
            parser.feed(
                b'data: {"id":"a","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9}}\n\n'
            )
        parser.feed(b"data: [DONE]\n\n")
        usage = parser.close()
        assert usage.output_tokens == (9 if reported else None)
        assert usage.delivered_text_bytes == (0 if reported else events * utf8("héllo "))


def test_only_usage_events_with_empty_choices_are_stripped() -> None:
    data = (
        b'data: {"id":"a","usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
        b'data: {"id":"a","choices":null,"usage":{"prompt_tokens":4,"completion_tokens":1}}\n\n'
        b'data: {"id":"a","choices":{},"usage":{"prompt_tokens":5,"completion_tokens":1}}\n\n'
    )
    assert run(lambda: ChatParser(True, True), [data]) == (data, Usage(5, 1))


@pytest.mark.parametrize(
    "value", ['"12"', "-5", "true", "12.0", "null", "[]", "{}", str(1 << 63), "1e400", "9" * 5000]
)
def test_bad_counts_are_not_reported(value: str) -> None:
    event = (
        '{"choices":[],"usage":{"prompt_tokens":V,"completion_tokens":V,'
        '"prompt_tokens_details":{"cached_tokens":V},"completion_tokens_details":{"reasoning_tokens":V}}}'
    ).replace("V", value)
    data = f"data: {event}\n\ndata: [DONE]\n\n".encode()
    forwarded, usage = run(lambda: ChatParser(True, True), [data])
    assert usage == Usage(complete=True)
    # Python refuses ints of over 4300 digits: that chunk is not JSON to us, so it is not stripped.
    assert forwarded == (data if len(value) > 4300 else b"data: [DONE]\n\n")


def test_chat_stream_garbage_is_forwarded_untouched() -> None:
    data = (
        b'data: {"choices": [}\n\n'  # invalid JSON
        b"data: [1, 2]\n\n"
        b'data: {"choices": 5, "usage": 3}\n\n'
        b'data: {"choices": [7, {"delta": 5}, {"delta": {"content": 5, "tool_calls": [1, {"function": 2}]}}]}\n\n'
        b'data: "\\ud800"\n\n'
        b'data: {"choices":[{"delta":{"content":"\\ud800"}}]}\n\n'
        b"data: " + b"[" * 100_000 + b"\n\n"
        b"\xff\xfe\x00garbage\n\n"
    )
    for strip in (False, True):
        forwarded, usage = run(partial(ChatParser, True, strip), [data])
        assert forwarded == data
        assert usage == Usage(delivered_text_bytes=3)


# --- chat completions, not streamed ----------------------------------------------------------

CHAT_BODY = (
    b'{\n  "id": "chatcmpl-C1uCj3",\n  "object": "chat.completion",\n  "created": 1754490321,\n'
    b'  "model": "gpt-4o-2024-08-06",\n  "choices": [\n    {\n      "index": 0,\n      "message": {\n'
    b'        "role": "assistant",\n        "content": "Gr\xc3\xbc\xc3\x9f dich!",\n        "refusal": null,\n'
    b'        "annotations": []\n      },\n      "logprobs": null,\n      "finish_reason": "stop"\n    },\n'
    b'    {\n      "index": 1,\n      "message": {\n        "role": "assistant",\n        "content": null,\n'
    b'        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]\n'
    b'      },\n      "logprobs": null,\n      "finish_reason": "tool_calls"\n    }\n  ],\n'
    b'  "usage": {\n    "prompt_tokens": 1234,\n    "completion_tokens": 56,\n    "total_tokens": 1290,\n'
    b'    "prompt_tokens_details": {\n      "cached_tokens": 1024,\n      "audio_tokens": 0\n    },\n'
    b'    "completion_tokens_details": {\n      "reasoning_tokens": 0,\n      "audio_tokens": 0,\n'
    b'      "accepted_prediction_tokens": 0,\n      "rejected_prediction_tokens": 0\n    }\n  },\n'
    b'  "service_tier": "default",\n  "system_fingerprint": "fp_07871e2ad8"\n}\n'
)
CHAT_BODY_USAGE = Usage(
    input_tokens=210,
    output_tokens=56,
    cached_input_tokens=1024,
    reasoning_tokens=0,
    service_tier="default",
    complete=True,
    delivered_text_bytes=utf8("Grüß dich!", "{}"),
)


def test_chat_body_every_split() -> None:
    check_every_split(lambda: ChatParser(stream=False), CHAT_BODY, CHAT_BODY, CHAT_BODY_USAGE)
    # strip_usage_chunk means nothing without a stream
    check_every_split(lambda: ChatParser(False, True), CHAT_BODY, CHAT_BODY, CHAT_BODY_USAGE)


def test_legacy_completions_body() -> None:
    body = (
        b'{"id":"cmpl-C1uF","object":"text_completion","created":1754490400,"model":"gpt-3.5-turbo-instruct",'
        b'"choices":[{"text":"\\n\\nThis is indeed a test","index":0,"logprobs":null,"finish_reason":"length"}],'
        b'"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}'
    )
    expected = Usage(5, 7, complete=True, delivered_text_bytes=utf8("\n\nThis is indeed a test"))
    assert run(lambda: ChatParser(stream=False), [body]) == (body, expected)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"error":{"message":"Rate limit","type":"requests","param":null,"code":"rate_limit_exceeded"}}',
            True,
        ),
        (b'{"id":"chatcmpl-x","choices":[]}', True),
        (b'{"id":"chatcmpl-x","choices":[],"usage":', False),
        (b"", False),
        (b"[1]", False),
        (b"\xff" * 10, False),
    ],
)
def test_chat_body_without_usage(body: bytes, expected: bool) -> None:
    assert run(lambda: ChatParser(stream=False), [body]) == (body, Usage(complete=expected))


def big_body(usage: bytes, after: bytes = b"") -> bytes:
    filler = b"0123456789abcdef" * 65536  # 1 MiB of content text
    content = b'"' + filler * (MAX_BODY_BYTES // len(filler) + 1) + b'"'
    return (
        b'{"id":"chatcmpl-big","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant",'
        b'"content":' + content + b'},"finish_reason":"stop"}],"usage":' + usage + after + b"}"
    )


def test_chat_body_over_the_bound_reads_usage_from_the_tail() -> None:
    body = big_body(
        b'{"prompt_tokens":12,"completion_tokens":9000000,"prompt_tokens_details":{"cached_tokens":2}}'
    )
    parser = ChatParser(stream=False)
    for i in range(0, len(body), 1 << 16):
        assert parser.feed(body[i : i + (1 << 16)]) == body[i : i + (1 << 16)]
        assert len(parser._body._buf) <= MAX_BODY_BYTES + (1 << 16)
    assert parser.flush() == b""
    assert parser.close() == Usage(10, 9_000_000, 2, complete=True)


def test_chat_body_over_the_bound_and_cut_off() -> None:
    body = big_body(b'{"prompt_tokens":12,"completion_tokens":9}')[:-1]
    assert run(lambda: ChatParser(stream=False), [body]) == (body, Usage())


# --- tail_object -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tail", "depth", "found"),
    [
        (b'x","usage":{"a":1},"metadata":{"usage":{"a":2}}}', 1, {"a": 1}),
        (b'x","usage":{"a":1},"metadata":{"usage":{"a":2}}}', 2, {"a": 2}),
        (b'x","usage":{"a":1},"m":"\\""}', 1, {"a": 1}),  # an escaped quote is not a delimiter
        (b'x\\",\\"usage\\":{\\"a\\":3}}","usage":{"a":1}}', 1, {"a": 1}),
        (b'x\\",\\"usage\\":{\\"a\\":3}}"}', 1, None),  # only text inside a string
        (b'x","usage" :\n {"a":[1,"}"]} }\n\n', 1, {"a": [1, "}"]}),
        (b'x","usage":null,"u":{"usage":{"a":2}}}', 1, None),
        (b'x","response":{"usage":{"a":4},"metadata":{}}}\n\n', 2, {"a": 4}),
        (b'x","usage":{"a":1}', 1, None),  # not the end of a value
        (b'\\"usage\\":{}}', 1, None),
        (b"}}}}", 1, None),
        (b"", 1, None),
    ],
)
def test_tail_object(tail: bytes, depth: int, found: object) -> None:
    assert tail_object(tail, "usage", depth) == found


# --- responses ---------------------------------------------------------------------------------

RESPONSE_ID = b'"id":"resp_6893f1c2a8d48191b0a2c4e1c52f4d7e0c3b2a1f9e8d7c6b"'
RESPONSES_STREAM = (
    b"event: response.created\n"
    b'data: {"type":"response.created","sequence_number":0,"response":{'
    + RESPONSE_ID
    + b',"object":"response",'
    b'"created_at":1754526146,"status":"in_progress","model":"gpt-5-mini-2025-08-07","output":[],'
    b'"usage":null,"metadata":{}}}\n\n'
    b"event: response.in_progress\n"
    b'data: {"type":"response.in_progress","sequence_number":1,"response":{'
    + RESPONSE_ID
    + b',"object":"response",'
    b'"created_at":1754526146,"status":"in_progress","model":"gpt-5-mini-2025-08-07","output":[],'
    b'"usage":null,"metadata":{}}}\n\n'
    b"event: response.output_item.added\n"
    b'data: {"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_1",'
    b'"type":"message","status":"in_progress","content":[],"role":"assistant"}}\n\n'
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","sequence_number":3,"item_id":"msg_1","output_index":0,'
    b'"content_index":0,"delta":"Hej","logprobs":[],"obfuscation":"5nG"}\n\n'
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,'
    b'"content_index":0,"delta":" v\xc3\xa4rlden","logprobs":[],"obfuscation":"q"}\n\n'
    b"event: response.function_call_arguments.delta\n"
    b'data: {"type":"response.function_call_arguments.delta","sequence_number":5,"item_id":"fc_1",'
    b'"output_index":1,"delta":"{}","obfuscation":"xyz"}\n\n'
    b"event: response.output_text.done\n"
    b'data: {"type":"response.output_text.done","sequence_number":6,"item_id":"msg_1","output_index":0,'
    b'"content_index":0,"text":"Hej v\xc3\xa4rlden","logprobs":[]}\n\n'
    b"event: response.completed\n"
    b'data: {"type":"response.completed","sequence_number":7,"response":{'
    + RESPONSE_ID
    + b',"object":"response",'
    b'"created_at":1754526146,"status":"completed","model":"gpt-5-mini-2025-08-07","output":[{"id":"msg_1",'
    b'"type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],'
    b'"text":"Hej v\xc3\xa4rlden"}],"role":"assistant"}],"usage":{"input_tokens":1500,"input_tokens_details":'
    b'{"cached_tokens":1280},"output_tokens":150,"output_tokens_details":{"reasoning_tokens":128},'
    b'"total_tokens":1650},"user":null,"metadata":{}}}\n\n'
)
RESPONSES_USAGE = Usage(
    input_tokens=220,
    output_tokens=150,
    cached_input_tokens=1280,
    reasoning_tokens=128,
    complete=True,
    delivered_text_bytes=utf8("Hej", " världen", "{}"),
)


def test_responses_stream_every_split() -> None:
    check_every_split(
        lambda: ResponsesParser(stream=True), RESPONSES_STREAM, RESPONSES_STREAM, RESPONSES_USAGE
    )


def test_responses_stream_cut_off_before_the_terminal_event() -> None:
    cut = RESPONSES_STREAM.index(b"event: response.completed")
    expected = Usage(delivered_text_bytes=utf8("Hej", " världen", "{}"))
    check_every_split(
        lambda: ResponsesParser(stream=True), RESPONSES_STREAM[:cut], RESPONSES_STREAM[:cut], expected
    )


@pytest.mark.parametrize("terminal", [b"response.incomplete", b"response.failed"])
def test_responses_stream_other_terminal_events(terminal: bytes) -> None:
    data = RESPONSES_STREAM.replace(b"response.completed", terminal)
    assert run(lambda: ResponsesParser(stream=True), [data]) == (data, RESPONSES_USAGE)


def test_responses_stream_huge_terminal_event_is_read_from_its_tail() -> None:
    image = b"iVBORw0KGgo" * 200_000  # > 1 MiB of base64 in the completed response
    data = (
        b"event: response.output_text.delta\n"
        b'data: {"type":"response.output_text.delta","sequence_number":1,"delta":"ok"}\n\n'
        b"event: response.completed\n"
        b'data: {"type":"response.completed","sequence_number":9,"response":{"id":"resp_1","output":['
        b'{"type":"image_generation_call","result":"' + image + b'"}],"usage":{"input_tokens":40,'
        b'"output_tokens":1056},"user":null,"metadata":{"usage":{"input_tokens":0,"output_tokens":0}}}}\n\n'
    )
    expected = Usage(40, 1056, complete=True, delivered_text_bytes=2)
    for size in (len(data), 1 << 16, 4099):
        pieces = [data[i : i + size] for i in range(0, len(data), size)]
        assert run(lambda: ResponsesParser(stream=True), pieces) == (data, expected)


RESPONSES_BODY = (
    b'{"id":"resp_68c1","object":"response","created_at":1754526200,"status":"completed","model":"gpt-5-2025-08-07",'
    b'"output":[{"id":"rs_1","type":"reasoning","summary":[{"type":"summary_text","text":"Plan."}]},'
    b'{"id":"fc_1","type":"function_call","status":"completed","arguments":"{\\"q\\":1}","call_id":"call_1",'
    b'"name":"search"},{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":'
    b'[{"type":"output_text","annotations":[],"text":"\xc2\xa1Hola!"},{"type":"refusal","refusal":"No."}]}],'
    b'"usage":{"input_tokens":3000,"input_tokens_details":{"cached_tokens":2048,"cache_write_tokens":512},'
    b'"output_tokens":700,"output_tokens_details":{"reasoning_tokens":600},"total_tokens":3700},'
    b'"user":null,"metadata":{"usage":{"input_tokens":1}}}'
)


def test_responses_body_every_split() -> None:
    expected = Usage(
        440,
        700,
        2048,
        512,
        600,
        complete=True,
        delivered_text_bytes=utf8("Plan.", '{"q":1}', "¡Hola!", "No."),
    )
    check_every_split(lambda: ResponsesParser(stream=False), RESPONSES_BODY, RESPONSES_BODY, expected)


SEARCHING_BODY = (
    b'{"id":"resp_2","object":"response","status":"completed","model":"gpt-5.4","service_tier":"priority",'
    b'"output":[{"id":"ws_1","type":"web_search_call","status":"completed"},{"id":"ws_2","type":"web_search_call",'
    b'"status":"completed"},{"id":"fs_1","type":"file_search_call","status":"completed","queries":["x"]},'
    b'{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"output_text","text":"ok"}]}],'
    b'"usage":{"input_tokens":90,"output_tokens":5}}'
)


def test_responses_count_search_calls_and_the_service_tier_that_ran() -> None:
    """OpenAI bills web and file search calls per call, and priority processing at its own rates."""
    expected = Usage(
        90, 5, web_searches=2, file_searches=1, service_tier="priority", complete=True, delivered_text_bytes=2
    )
    check_every_split(lambda: ResponsesParser(stream=False), SEARCHING_BODY, SEARCHING_BODY, expected)
    stream = b"".join(
        b"event: " + kind + b"\ndata: " + payload + b"\n\n"
        for kind, payload in (
            (
                b"response.output_item.done",
                b'{"type":"response.output_item.done","item":{"type":"web_search_call"}}',
            ),
            (b"response.output_item.done", b'{"type":"response.output_item.done","item":{"type":"message"}}'),
            (
                b"response.output_item.done",
                b'{"type":"response.output_item.done","item":{"type":"file_search_call"}}',
            ),
            (b"response.output_text.delta", b'{"type":"response.output_text.delta","delta":"ok"}'),
            (
                b"response.completed",
                b'{"type":"response.completed","response":{"service_tier":"flex","usage":'
                b'{"input_tokens":90,"output_tokens":5}}}',
            ),
        )
    )
    flex = Usage(
        90, 5, web_searches=1, file_searches=1, service_tier="flex", complete=True, delivered_text_bytes=2
    )
    check_every_split(lambda: ResponsesParser(stream=True), stream, stream, flex)


# --- embeddings --------------------------------------------------------------------------------

EMBEDDINGS_BODY = (
    b'{\n  "object": "list",\n  "data": [\n    {\n      "object": "embedding",\n      "index": 0,\n'
    b'      "embedding": [\n        -0.006929283,\n        -0.005336422,\n        0.024047505\n      ]\n    }\n'
    b'  ],\n  "model": "text-embedding-3-small",\n  "usage": {\n    "prompt_tokens": 8,\n    "total_tokens": 8\n'
    b"  }\n}\n"
)


def test_embeddings_every_split() -> None:
    expected = Usage(input_tokens=8, output_tokens=0, complete=True)
    check_every_split(EmbeddingsParser, EMBEDDINGS_BODY, EMBEDDINGS_BODY, expected)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"object":"list","data":[],"usage":{"prompt_tokens":"8"}}', Usage(complete=True)),
        (b'{"error":{"message":"bad","type":"invalid_request_error"}}', Usage(complete=True)),
        (b'{"object":"list","data":[', Usage()),
    ],
)
def test_embeddings_without_usage(body: bytes, expected: Usage) -> None:
    assert run(EmbeddingsParser, [body]) == (body, expected)


def test_embeddings_over_the_bound() -> None:
    vector = json.dumps([0.0123456789] * 4096).encode()
    rows = b",".join(b'{"object":"embedding","index":0,"embedding":' + vector + b"}" for _ in range(800))
    body = (
        b'{"object":"list","data":['
        + rows
        + b'],"model":"m","usage":{"prompt_tokens":80000,"total_tokens":80000}}'
    )
    assert len(body) > MAX_BODY_BYTES
    pieces = [body[i : i + (1 << 20)] for i in range(0, len(body), 1 << 20)]
    assert run(EmbeddingsParser, pieces) == (body, Usage(80000, 0, complete=True))


# --- anything goes in, the same bytes come out -------------------------------------------------

PARSERS: list[Factory] = [
    lambda: ChatParser(stream=True),
    lambda: ChatParser(stream=False),
    lambda: ResponsesParser(stream=True),
    lambda: ResponsesParser(stream=False),
    EmbeddingsParser,
]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


FRAGMENTS = [
    CHAT_STREAM[:400],
    CHAT_USAGE_EVENT,
    RESPONSES_STREAM[-700:],
    b"data: [DONE]\n\n",
    b"\r\n",
    b"\r",
    b"\n\n",
    b'data: {"choices":[],"usage":{"prompt_tokens":1}}',
    b"\xf0\x9f",
]


@settings(max_examples=300, deadline=None, database=None)
@given(
    data=st.one_of(st.binary(max_size=2000), st.lists(st.sampled_from(FRAGMENTS), max_size=12).map(b"".join)),
    cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=10),
)
def test_random_bytes_are_forwarded_unchanged(data: bytes, cuts: list[int]) -> None:
    for factory in PARSERS:
        forwarded, usage = run(factory, split(data, cuts))
        assert forwarded == data
        assert run(factory, [data])[1] == usage


@settings(max_examples=300, deadline=None, database=None)
@given(
    data=st.one_of(st.binary(max_size=2000), st.lists(st.sampled_from(FRAGMENTS), max_size=12).map(b"".join)),
    cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=10),
)
def test_random_bytes_when_stripping(data: bytes, cuts: list[int]) -> None:
    forwarded, usage = run(lambda: ChatParser(True, True), split(data, cuts))
    assert (forwarded, usage) == run(lambda: ChatParser(True, True), [data])


def chat_chunk(n: int) -> bytes:
    return b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"%d"}}],"usage":null}' % n


EVENTS = st.lists(
    st.one_of(
        st.integers(0, 99).map(chat_chunk),
        st.just(b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}'),
        st.just(b": ping"),
        st.just(b"data: [DONE]"),
        st.just(b"event: x\ndata: {not json"),
        st.binary(max_size=30).filter(lambda b: b"\r" not in b and b"\n" not in b),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    events=EVENTS,
    eol=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(0, 2000), max_size=10),
)
def test_stripping_drops_exactly_the_usage_events(events: list[bytes], eol: bytes, cuts: list[int]) -> None:
    raws = [event.replace(b"\n", eol) + eol + eol for event in events]
    data = b"".join(raws)
    kept = b"".join(raw for raw in raws if b'"choices":[],"usage":{' not in raw)
    forwarded, usage = run(lambda: ChatParser(True, True), split(data, cuts))
    assert forwarded == kept
    assert usage.input_tokens == (7 if len(kept) < len(data) else None)


@pytest.mark.parametrize(
    "chunk",
    [
        b'{"choices":[{"index":0,"delta":{},"usage":{"prompt_tokens":3,"completion_tokens":4}}],"usage" : null}',
        b'{"usage": null, "choices":[], "usage": {"prompt_tokens":3,"completion_tokens":4}}',
        b'{"choices":[],"usage":\n{"prompt_tokens":3,"completion_tokens":4}}',
    ],
    ids=["null-beside-a-choice-usage", "null-then-a-usage", "usage-after-a-newline"],
)
def test_a_chunk_is_skipped_only_when_its_only_usage_is_null(chunk: bytes) -> None:
    data = b"data: " + chunk.replace(b"\n", b" ") + b"\n\ndata: [DONE]\n\n"
    usage = run(lambda: ChatParser(True), [data])[1]
    assert (usage.input_tokens, usage.output_tokens) == (3, 4)

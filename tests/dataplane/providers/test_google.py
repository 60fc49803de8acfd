"""Gemini's usage parsers, fed recorded bodies in all three forms (SSE, streamed
JSON array, one JSON body) split at every byte boundary, cut off, oversized,
and garbage."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.providers.google import EmbedParser, GenerateParser
from dataplane.providers.jsonarray import JsonArraySplitter
from dataplane.providers.sse import MAX_EVENT_BYTES
from dataplane.providers.usage import Usage
from tests.dataplane.providers.test_openai import check_every_split, run, split, utf8

# --- a recorded gemini-2.5-flash answer: thinking, an implicit cache hit, text, a function call ----

META = (
    b'"promptTokenCount": 1210,"totalTokenCount": 1818,"cachedContentTokenCount": 1024,'
    b'"promptTokensDetails": [{"modality": "TEXT","tokenCount": 1210}],'
    b'"cacheTokensDetails": [{"modality": "TEXT","tokenCount": 1024}],"thoughtsTokenCount": 608'
)
TAIL = b',"modelVersion": "gemini-2.5-flash","responseId": "Qv8naLrXFsmD1dkP2_2K0Ac"}'
CHUNK_1 = (
    b'{"candidates": [{"content": {"parts": [{"text": "Bonjour"}],"role": "model"},"index": 0}],'
    b'"usageMetadata": {' + META + b"}" + TAIL
)
CHUNK_2 = (
    b'{"candidates": [{"content": {"parts": [{"text": " \xf0\x9f\x91\x8b, \\"\xc3\xa7a\\" va ?\\\\n"}],'
    b'"role": "model"},"index": 0}],"usageMetadata": {'
    + META.replace(b'"totalTokenCount": 1818', b'"candidatesTokenCount": 7,"totalTokenCount": 1825')
    + b"}"
    + TAIL
)
CHUNK_3 = (
    b'{"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather","args": '
    b'{"city": "Paris [FR] {75}"}}}],"role": "model"},"finishReason": "STOP","index": 0}],'
    b'"usageMetadata": {'
    + META.replace(b'"totalTokenCount": 1818', b'"candidatesTokenCount": 19,"totalTokenCount": 1837')
    + b"}"
    + TAIL
)
CHUNKS = (CHUNK_1, CHUNK_2, CHUNK_3)
SSE = b"".join(b"data: " + chunk + b"\r\n\r\n" for chunk in CHUNKS)
ARRAY = (
    b"["
    + b"\n,\r\n".join(json.dumps(json.loads(c), indent=2, ensure_ascii=False).encode() for c in CHUNKS)
    + b"\n]"
)

TEXT_1 = utf8("Bonjour")
TEXT_2 = utf8(' 👋, "ça" va ?\\n')
ARGS = utf8('{"city":"Paris [FR] {75}"}')
FULL = Usage(
    input_tokens=1210 - 1024,
    output_tokens=19 + 608,
    cached_input_tokens=1024,
    reasoning_tokens=608,
    complete=True,
    delivered_text_bytes=TEXT_1 + TEXT_2 + ARGS,
)
# Cut off inside the second chunk: the first says nothing of the answer's tokens yet, so the
# text delivered is estimated (4 bytes a token) on top of the thoughts reported.
AFTER_FIRST = Usage(
    input_tokens=186,
    output_tokens=608 + 2,
    cached_input_tokens=1024,
    reasoning_tokens=608,
    estimated=True,
    delivered_text_bytes=TEXT_1,
)
AFTER_SECOND = Usage(
    input_tokens=186,
    output_tokens=7 + 608,
    cached_input_tokens=1024,
    reasoning_tokens=608,
    delivered_text_bytes=TEXT_1 + TEXT_2,
)

Factory = Callable[[], GenerateParser]
STREAM: Factory = partial(GenerateParser, True)


@pytest.mark.parametrize("body", [SSE, ARRAY, SSE.replace(b"\r\n", b"\n")], ids=["sse", "array", "sse-lf"])
def test_stream_every_split(body: bytes) -> None:
    check_every_split(STREAM, body, body, FULL)


@pytest.mark.parametrize("body", [SSE, ARRAY], ids=["sse", "array"])
def test_stream_cut_off_inside_the_second_chunk(body: bytes) -> None:
    cut = body.index(b"\xc3\xa7a")  # inside the second chunk's text
    check_every_split(STREAM, body[:cut], body[:cut], AFTER_FIRST)


def test_array_cut_off_between_chunks_keeps_the_last_cumulative_usage() -> None:
    cut = ARRAY.index(b"\n,\r\n", ARRAY.index(b"candidatesTokenCount"))
    check_every_split(STREAM, ARRAY[:cut], ARRAY[:cut], AFTER_SECOND)


def test_single_body_every_split() -> None:
    body = json.loads(CHUNK_3)
    body["candidates"][0]["content"]["parts"] = [
        {"text": "Bonjour"},
        {"text": ' 👋, "ça" va ?\\n'},
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris [FR] {75}"}}},
    ]
    data = json.dumps(body, indent=2, ensure_ascii=False).encode() + b"\n"
    check_every_split(partial(GenerateParser, False), data, data, FULL)


def test_single_body_cut_off_reports_nothing() -> None:
    data = json.dumps(json.loads(CHUNK_3), indent=2).encode()
    assert run(partial(GenerateParser, False), [data[:-40]])[1] == Usage()


def test_thought_parts_count_as_delivered_but_not_as_answer() -> None:
    chunk = {
        "candidates": [
            {"content": {"parts": [{"text": "hmm, let me see", "thought": True}], "role": "model"}}
        ],
        "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 20, "thoughtsTokenCount": 16},
    }
    data = b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"
    expected = Usage(input_tokens=4, output_tokens=16, reasoning_tokens=16, estimated=False)
    assert run(STREAM, [data])[1] == Usage(
        input_tokens=4, reasoning_tokens=16, delivered_text_bytes=utf8("hmm, let me see")
    )
    # Once the answer starts and is cut off, only the answer's bytes are turned into an estimate.
    answer = json.dumps({**chunk, "candidates": [{"content": {"parts": [{"text": "Yes."}]}}]}).encode()
    usage = run(STREAM, [data + b"data: " + answer + b"\r\n\r\n"])[1]
    assert (usage.output_tokens, usage.estimated) == (16 + 1, True)
    assert expected.reasoning_tokens == usage.reasoning_tokens


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        # Tool-use prompt tokens (e.g. search results fed back to the model) are input.
        (
            {"promptTokenCount": 10, "candidatesTokenCount": 3, "toolUsePromptTokenCount": 90},
            Usage(input_tokens=100, output_tokens=3, complete=True),
        ),
        # An inconsistent report never bills a negative.
        (
            {"promptTokenCount": 10, "cachedContentTokenCount": 50, "candidatesTokenCount": 1},
            Usage(input_tokens=0, output_tokens=1, cached_input_tokens=50, complete=True),
        ),
        # Audio and image prompt tokens are priced apart; cached ones stay cached.
        (
            {
                "promptTokenCount": 1300,
                "cachedContentTokenCount": 300,
                "candidatesTokenCount": 4,
                "promptTokensDetails": [
                    {"modality": "TEXT", "tokenCount": 100},
                    {"modality": "AUDIO", "tokenCount": 900},
                    {"modality": "IMAGE", "tokenCount": 300},
                ],
                "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 300}],
            },
            Usage(
                input_tokens=100,
                output_tokens=4,
                cached_input_tokens=300,
                audio_input_tokens=600,
                image_input_tokens=300,
                complete=True,
            ),
        ),
        # Bad counts are not reported.
        ({"promptTokenCount": -1, "candidatesTokenCount": "3"}, Usage(output_tokens=0, complete=True)),
        ({"promptTokenCount": True, "candidatesTokenCount": 2.0}, Usage(output_tokens=0, complete=True)),
    ],
)
def test_usage_normalisation(meta: dict[str, object], expected: Usage) -> None:
    body = {"candidates": [{"finishReason": "STOP"}], "usageMetadata": meta}
    assert run(partial(GenerateParser, False), [json.dumps(body).encode()])[1] == expected


@pytest.mark.parametrize(("per_query", "searches"), [(True, 3), (False, 1)])
def test_grounding_counts_search_queries_or_grounded_prompts(per_query: bool, searches: int) -> None:
    """Gemini 3 bills each search query, Gemini 2.5 each grounded prompt; a stream repeats the metadata."""
    grounding = {"webSearchQueries": ["a", "b", "c"], "groundingChunks": []}
    chunks = [
        {"candidates": [{"content": {"parts": [{"text": "x"}]}, "groundingMetadata": grounding}]},
        {
            "candidates": [{"finishReason": "STOP", "groundingMetadata": grounding}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1},
        },
    ]
    data = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)
    usage = run(partial(GenerateParser, True, per_query), [data])[1]
    assert usage.web_searches == searches
    plain = {"candidates": [{"finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 5}}
    assert run(partial(GenerateParser, False), [json.dumps(plain).encode()])[1].web_searches is None


def test_a_blocked_prompt_costs_its_input_only() -> None:
    body = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5}}
    data = b"data: " + json.dumps(body).encode() + b"\r\n\r\n"
    assert run(STREAM, [data])[1] == Usage(input_tokens=5, output_tokens=0, complete=True)


def test_a_json_error_in_a_stream_reports_no_usage() -> None:
    error = b'{\n  "error": {\n    "code": 429,\n    "message": "quota",\n    "status": "RESOURCE_EXHAUSTED"\n  }\n}\n'
    data = b"  " + error
    check_every_split(STREAM, data, data, Usage(complete=True))


def test_an_sse_chunk_too_big_to_parse_is_read_from_its_tail() -> None:
    image = {"inlineData": {"mimeType": "image/png", "data": "A" * (MAX_EVENT_BYTES + 10)}}
    chunk = json.loads(CHUNK_3)
    chunk["candidates"][0]["content"]["parts"] = [image]
    big = b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"
    data = b"data: " + CHUNK_1 + b"\r\n\r\n" + big
    usage = run(STREAM, split(data, [100, len(data) // 2, len(data) - 3]))[1]
    assert (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == (186, 19 + 608, 1024)


def test_an_array_item_too_big_to_keep_is_read_from_its_tail() -> None:
    chunk = json.loads(CHUNK_3)
    chunk["candidates"][0]["content"]["parts"] = [{"text": "x" * (2 << 20)}]
    data = b"[" + CHUNK_1 + b",\r\n" + json.dumps(chunk).encode() + b"]"
    forwarded, usage = run(STREAM, split(data, [5000, len(data) // 2]))
    assert forwarded == data
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens) == (186, 19 + 608, 608)


# --- the JSON array splitter -----------------------------------------------------------------


@pytest.mark.parametrize("data", [ARRAY, b' [ {"a": "]\\\\"}, [1, {"b": "\\"}"}], "x", 3 , {}]  '])
def test_array_items_come_out_whole_at_every_split(data: bytes) -> None:
    whole = [item.raw for item in JsonArraySplitter().feed(data)]
    assert [json.loads(raw) for raw in whole] == [v for v in json.loads(data) if isinstance(v, dict | list)]
    for i in range(len(data) + 1):
        splitter = JsonArraySplitter()
        assert [item.raw for item in splitter.feed(data[:i]) + splitter.feed(data[i:])] == whole
    splitter = JsonArraySplitter()
    assert [item.raw for i in range(len(data)) for item in splitter.feed(data[i : i + 1])] == whole


def test_array_item_over_the_bound_keeps_only_its_tail() -> None:
    splitter = JsonArraySplitter(max_item_bytes=64, tail_bytes=16)
    item = b'{"text": "' + b"y" * 200 + b'", "n": 1}'
    items = [
        got for i in range(0, len(item) + 2, 7) for got in splitter.feed((b"[" + item + b"]")[i : i + 7])
    ]
    assert [(i.raw, i.truncated) for i in items] == [(item[-16:], True)]
    assert splitter.feed(b'[{"ok": 1}]')[0].truncated is False  # the bound is per item


# --- embeddings --------------------------------------------------------------------------------

BATCH = json.dumps(
    {"embeddings": [{"values": [0.5, -0.25]}], "usageMetadata": {"promptTokenCount": 9}}, indent=2
).encode()
SINGLE = json.dumps({"embedding": {"values": [0.5, -0.25]}}, indent=2).encode()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (BATCH, Usage(input_tokens=9, output_tokens=0, complete=True)),
        # No usage reported: complete, output 0, input left to the gateway's estimate.
        (SINGLE, Usage(output_tokens=0, estimated=True, complete=True)),
    ],
)
def test_embed_every_split(data: bytes, expected: Usage) -> None:
    check_every_split(EmbedParser, data, data, expected)


@pytest.mark.parametrize("data", [b"", b"{", b'{"error": {"code": 400}}', b"[1, 2]", b"\xff\xfe"])
def test_embed_without_vectors_reports_nothing(data: bytes) -> None:
    assert run(EmbedParser, [data]) == (data, Usage())


# --- garbage -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.binary(max_size=400) | st.sampled_from([SSE[:-7], ARRAY[:90], b"[[[[", b"]]]}}", b'["\\', b"data: {"]),
    st.lists(st.integers(min_value=0, max_value=400), max_size=5),
)
def test_random_bytes_are_forwarded_unchanged_and_never_raise(data: bytes, cuts: list[int]) -> None:
    for factory in (STREAM, partial(GenerateParser, False), EmbedParser):
        forwarded, usage = run(factory, split(data, cuts))
        assert forwarded == data and isinstance(usage, Usage)

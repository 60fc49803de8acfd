"""The fake provider, driven by the real OpenAI and Anthropic SDKs, raw httpx
and raw sockets; its HTTP parser is fed every split point."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import httpx2  # the transport both SDKs use; an aborted Anthropic stream surfaces its error
import openai
import pytest

from fakeupstream.server import (
    DEFAULT_REPLY_TOKENS,
    THINKING_TOKENS,
    MockUpstream,
    RecordedRequest,
    _HttpError,
    _RequestParser,
    count_prompt_tokens,
    mock_embedding,
    reply_text,
    reply_tokens,
    run_in_thread,
    running_mock,
    thinking_tokens,
)

MODEL = "gpt-4o-mini"
CLAUDE = "claude-mock-1"  # not a real model, so no SDK deprecation warning
USER: Any = [{"role": "user", "content": "hello there"}]  # 11 bytes -> 3 tokens


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with running_mock() as server:
        yield server


@pytest.fixture
def oai(mock: MockUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{mock.url}/v1", api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture
def ant(mock: MockUpstream) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=mock.url, api_key="sk-ant-test", max_retries=0) as client:
        yield client


@pytest.fixture
def raw(mock: MockUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mock.url) as client:
        yield client


def _sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE event."""
    out = []
    for block in text.split("\n\n"):
        if not block:
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((fields.get("event"), fields["data"]))
    return out


# --- token formulas ------------------------------------------------------------


def test_prompt_tokens_are_a_quarter_of_the_text_bytes() -> None:
    assert count_prompt_tokens({"messages": USER}) == 3
    body = {
        "model": "ignored",
        "system": [{"type": "text", "text": "abcd" * 10, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "é"}]}],  # 2 bytes
        "tools": [{"name": "get", "description": "xy", "input_schema": {"type": "object"}}],  # 5 bytes
    }
    assert count_prompt_tokens(body) == 12  # ceil(47 / 4)
    assert count_prompt_tokens({"input": [[1, 2, 3], "abcd"]}) == 4  # token ids count 1 each
    assert count_prompt_tokens({"prompt": ""}) == 0


def test_reply_length_follows_the_limits() -> None:
    assert reply_tokens({}) == DEFAULT_REPLY_TOKENS
    assert reply_tokens({"max_tokens": 5}) == 5
    assert reply_tokens({"max_completion_tokens": 100}, forced=40) == 40
    thinking = {"max_tokens": 12, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert thinking_tokens(thinking) == THINKING_TOKENS
    assert reply_tokens(thinking) == 12 - THINKING_TOKENS
    assert reply_text(3) == "mock reply from"


# --- OpenAI ------------------------------------------------------------------------


def test_chat_completion(oai: openai.OpenAI, mock: MockUpstream) -> None:
    reply = oai.chat.completions.create(model=MODEL, messages=USER)
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion"
    assert reply.model == MODEL
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content == reply_text(DEFAULT_REPLY_TOKENS)
    usage = reply.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 16, 19)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0

    recorded = mock.requests[-1]
    assert (recorded.method, recorded.path, recorded.query) == ("POST", "/v1/chat/completions", "")
    assert recorded.header("authorization") == "Bearer sk-test"
    assert (recorded.header("user-agent") or "").startswith("OpenAI/Python")
    assert recorded.json() == {"model": MODEL, "messages": USER}


def test_chat_stream_with_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply_text(DEFAULT_REPLY_TOKENS)
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 19


def test_chat_stream_without_include_usage_has_no_usage(raw: httpx.Client) -> None:
    body = {"model": MODEL, "messages": USER, "stream": True}
    response = raw.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer k"})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    events = _sse_events(response.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all("usage" not in c and len(c["choices"]) == 1 for c in chunks)

    body["stream_options"] = {"include_usage": True}
    response = raw.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer k"})
    chunks = [json.loads(data) for _, data in _sse_events(response.text)[:-1]]
    assert [c["usage"] is None for c in chunks] == [True] * (len(chunks) - 1) + [False]
    assert chunks[-1]["choices"] == []


def test_chat_tool_call(oai: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    reply = oai.chat.completions.create(model=MODEL, messages=USER, tools=tools, tool_choice="required")
    calls = reply.choices[0].message.tool_calls
    assert calls is not None and calls[0].type == "function"
    call = calls[0]
    assert call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"input": reply_text(16)}
    assert reply.choices[0].finish_reason == "tool_calls"

    named: Any = {"type": "function", "function": {"name": "lookup"}}
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=USER,
        tools=tools,
        tool_choice=named,
        stream=True,
    )
    functions = [call.function for c in stream for call in c.choices[0].delta.tool_calls or []]
    assert functions[0] is not None and functions[0].name == "lookup"
    arguments = "".join(f.arguments or "" for f in functions if f is not None)
    assert json.loads(arguments) == {"input": reply_text(16)}

    auto = oai.chat.completions.create(model=MODEL, messages=USER, tools=tools)
    assert auto.choices[0].message.tool_calls is None


def test_chat_limits_and_forced_length(oai: openai.OpenAI) -> None:
    short = oai.chat.completions.create(model=MODEL, messages=USER, max_completion_tokens=5)
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 5
    forced = oai.chat.completions.create(
        model=MODEL,
        messages=USER,
        extra_headers={"x-mock-output-tokens": "300", "x-mock-cached-tokens": "2"},
    )
    assert forced.usage is not None and forced.usage.completion_tokens == 300
    assert forced.choices[0].message.content == reply_text(300)
    assert forced.usage.prompt_tokens_details is not None
    assert forced.usage.prompt_tokens_details.cached_tokens == 2


def test_legacy_completions(oai: openai.OpenAI) -> None:
    reply = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="say something")
    assert reply.object == "text_completion" and reply.choices[0].text == reply_text(16)
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (4, 16)
    stream = oai.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="say something",
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == reply_text(4)
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8


def test_embeddings(oai: openai.OpenAI, mock: MockUpstream) -> None:
    inputs = ["first text", "second"]
    default = oai.embeddings.create(model="text-embedding-3-small", input=inputs)  # SDK asks for base64
    assert mock.requests[-1].json()["encoding_format"] == "base64"
    assert [e.embedding for e in default.data] == [mock_embedding(x) for x in inputs]
    assert (default.usage.prompt_tokens, default.usage.total_tokens) == (4, 4)  # ceil(16 / 4)
    floats = oai.embeddings.create(
        model="text-embedding-3-small", input="first text", encoding_format="float", dimensions=16
    )
    assert floats.data[0].embedding == mock_embedding("first text", 16)
    tokens = oai.embeddings.create(model="text-embedding-3-small", input=[[1, 2], [3]])
    assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 3


def test_responses(oai: openai.OpenAI) -> None:
    reply = oai.responses.create(model=MODEL, input="what is up", instructions="be brief")
    assert reply.object == "response" and reply.status == "completed"
    assert reply.output_text == reply_text(16)
    assert reply.usage is not None
    assert (reply.usage.input_tokens, reply.usage.output_tokens, reply.usage.total_tokens) == (5, 16, 21)
    assert reply.usage.input_tokens_details.cached_tokens == 0
    assert reply.usage.output_tokens_details.reasoning_tokens == 0

    with oai.responses.stream(model=MODEL, input="what is up") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 16,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert final.output_text == reply_text(16)
    assert final.usage is not None and final.usage.total_tokens == 3 + 16

    # Cut short by max_output_tokens: the terminal event is response.incomplete, as upstream.
    events = list(oai.responses.create(model=MODEL, input="what is up", max_output_tokens=3, stream=True))
    last = events[-1]
    assert last.type == "response.incomplete" and last.response.status == "incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.usage is not None and last.response.usage.output_tokens == 3


def test_responses_stream_wire(raw: httpx.Client) -> None:
    body = {"model": MODEL, "input": "hi", "stream": True}
    response = raw.post("/v1/responses", json=body, headers={"authorization": "Bearer k"})
    events = _sse_events(response.text)
    payloads = [json.loads(data) for _, data in events]
    assert [name for name, _ in events] == [p["type"] for p in payloads]
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    assert payloads[0]["response"]["usage"] is None
    assert payloads[-1]["type"] == "response.completed"
    assert payloads[-1]["response"]["usage"]["total_tokens"] == 17


def test_models(oai: openai.OpenAI) -> None:
    assert MODEL in [m.id for m in oai.models.list()]


# --- Anthropic --------------------------------------------------------------------


def test_message(ant: anthropic.Anthropic, mock: MockUpstream) -> None:
    message = ant.messages.create(model=CLAUDE, max_tokens=1024, messages=USER)
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == CLAUDE and message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.content[0].type == "text" and message.content[0].text == reply_text(16)
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens) == (3, 16)
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (0, 0)
    recorded = mock.requests[-1]
    assert recorded.path == "/v1/messages"
    # anthropic 2.x sends api_key as a Bearer token (older SDKs used x-api-key); both are accepted.
    assert "sk-ant-test" in (recorded.header("x-api-key"), (recorded.header("authorization") or "")[7:])
    assert recorded.header("anthropic-version")

    short = ant.messages.create(model=CLAUDE, max_tokens=4, messages=USER)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 4


def test_message_stream(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(model=CLAUDE, max_tokens=1024, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == reply_text(16)
    assert final.usage.output_tokens == 16 and final.usage.input_tokens == 3
    assert final.stop_reason == "end_turn"


def test_message_stream_wire(raw: httpx.Client) -> None:
    body = {"model": CLAUDE, "max_tokens": 2, "messages": USER, "stream": True}
    response = raw.post("/v1/messages", json=body, headers={"x-api-key": "k"})
    events = _sse_events(response.text)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert [json.loads(data)["type"] for _, data in events] == [name for name, _ in events]
    start, delta = json.loads(events[0][1]), json.loads(events[-2][1])
    assert start["message"]["usage"]["output_tokens"] == 1
    assert delta == {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
        "usage": {"output_tokens": 2},
    }


def test_thinking(ant: anthropic.Anthropic) -> None:
    kwargs: Any = {
        "model": CLAUDE,
        "max_tokens": 2048,
        "messages": USER,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    message = ant.messages.create(**kwargs)
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].signature
    assert message.usage.output_tokens == THINKING_TOKENS + 16
    with ant.messages.stream(**kwargs) as stream:
        kinds = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert kinds.count("thinking_delta") == THINKING_TOKENS and kinds.count("signature_delta") == 1
    assert final.content[0].type == "thinking" and final.content[0].thinking == message.content[0].thinking
    assert final.content[1].type == "text" and final.content[1].text == reply_text(16)
    assert final.usage.output_tokens == THINKING_TOKENS + 16


def test_tool_use(ant: anthropic.Anthropic) -> None:
    tools: Any = [{"name": "lookup", "input_schema": {"type": "object"}}]
    message = ant.messages.create(
        model=CLAUDE,
        max_tokens=100,
        messages=USER,
        tools=tools,
        tool_choice={"type": "any"},
    )
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "lookup" and block.input == {"input": reply_text(16)}
    with ant.messages.stream(
        model=CLAUDE,
        max_tokens=100,
        messages=USER,
        tools=tools,
        tool_choice={"type": "tool", "name": "lookup"},
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == {"input": reply_text(16)}


def test_prompt_caching(ant: anthropic.Anthropic) -> None:
    system: Any = [
        {"type": "text", "text": uuid.uuid4().hex * 12 + "x" * 16, "cache_control": {"type": "ephemeral"}}
    ]
    question: Any = [{"role": "user", "content": "q" * 40}]  # system: 400 bytes, 100 tokens; question: 10

    first = ant.messages.create(model=CLAUDE, max_tokens=10, system=system, messages=question).usage
    assert (first.cache_creation_input_tokens, first.cache_read_input_tokens, first.input_tokens) == (
        100,
        0,
        10,
    )
    assert first.cache_creation is not None and first.cache_creation.ephemeral_5m_input_tokens == 100
    with ant.messages.stream(model=CLAUDE, max_tokens=10, system=system, messages=question) as stream:
        again = stream.get_final_message().usage
    assert (again.cache_creation_input_tokens, again.cache_read_input_tokens, again.input_tokens) == (
        0,
        100,
        10,
    )

    marked: Any = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "q" * 40, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
            ],
        }
    ]
    longer = ant.messages.create(model=CLAUDE, max_tokens=10, system=system, messages=marked).usage
    assert (longer.cache_creation_input_tokens, longer.cache_read_input_tokens, longer.input_tokens) == (
        10,
        100,
        0,
    )
    assert longer.cache_creation is not None and longer.cache_creation.ephemeral_1h_input_tokens == 10
    other_model = ant.messages.create(
        model="claude-other", max_tokens=10, system=system, messages=question
    ).usage
    assert other_model.cache_creation_input_tokens == 100


def test_count_tokens(ant: anthropic.Anthropic) -> None:
    counted = ant.messages.count_tokens(model=CLAUDE, messages=USER, system="abcd")
    assert counted.input_tokens == 4


# --- errors and knobs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, openai.RateLimitError), (500, openai.InternalServerError), (400, openai.BadRequestError)],
)
def test_openai_errors(oai: openai.OpenAI, status: int, error: type[openai.APIStatusError]) -> None:
    with pytest.raises(error) as caught:
        oai.chat.completions.create(
            model=MODEL,
            messages=USER,
            stream=True,
            extra_headers={"x-mock-status": str(status)},
        )
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict) and set(caught.value.body) == {
        "message",
        "type",
        "param",
        "code",
    }


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
        (500, anthropic.InternalServerError, "api_error"),
    ],
)
def test_anthropic_errors(
    ant: anthropic.Anthropic, status: int, error: type[anthropic.APIStatusError], kind: str
) -> None:
    with pytest.raises(error) as caught:
        ant.messages.create(
            model=CLAUDE,
            max_tokens=5,
            messages=USER,
            extra_headers={"x-mock-status": str(status)},
        )
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == kind


def test_auth_bad_json_and_unknown_routes(raw: httpx.Client) -> None:
    missing = raw.post("/v1/chat/completions", json={"model": MODEL, "messages": USER})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    missing = raw.post("/v1/messages", json={"model": CLAUDE}, headers={"authorization": "Basic a2V5"})
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    bearer = raw.post(
        "/v1/messages/count_tokens",
        json={"model": CLAUDE, "messages": []},
        headers={"authorization": "Bearer t"},
    )
    assert bearer.json() == {"input_tokens": 0}

    bad = raw.post("/v1/chat/completions", content=b"{nope", headers={"authorization": "Bearer k"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    bad = raw.post("/v1/messages", content=b"[1]", headers={"x-api-key": "k"})
    assert bad.status_code == 400 and bad.json()["type"] == "error"
    no_max = raw.post("/v1/messages", json={"model": CLAUDE, "messages": USER}, headers={"x-api-key": "k"})
    assert no_max.json()["error"]["message"] == "max_tokens: Field required"
    knob = raw.post("/v1/messages", json={}, headers={"x-api-key": "k", "x-mock-delay-ms": "soon"})
    assert knob.status_code == 400
    assert raw.get("/v1/nothing", headers={"authorization": "Bearer k"}).status_code == 404


def test_abort_after_makes_the_sdks_raise(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=USER,
        stream=True,
        extra_headers={"x-mock-abort-after": "3"},
    )
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 3
    with (
        # older anthropic releases let httpx2's error through; 2.17 raises its own, as openai does
        pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)),
        ant.messages.stream(
            model=CLAUDE,
            max_tokens=100,
            messages=USER,
            extra_headers={"x-mock-abort-after": "4"},
        ) as astream,
    ):
        astream.get_final_message()


def _raw_post(path: str, body: dict[str, Any], *headers: str) -> bytes:
    data = json.dumps(body).encode()
    lines = "".join(f"{h}\r\n" for h in ("host: x", "authorization: Bearer k", *headers))
    return f"POST {path} HTTP/1.1\r\n{lines}content-length: {len(data)}\r\n\r\n".encode() + data


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request)
        return _read_until_eof(sock)


def test_abort_after_on_the_wire(mock: MockUpstream) -> None:
    body = {"model": MODEL, "messages": USER, "stream": True}
    received = _exchange(mock.port, _raw_post("/v1/chat/completions", body, "x-mock-abort-after: 2"))
    headers, _, chunked = received.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in headers
    assert chunked.count(b"data: ") == 2 and not chunked.endswith(b"0\r\n\r\n")

    body["stream"] = False  # a JSON reply is cut after N body bytes
    received = _exchange(mock.port, _raw_post("/v1/chat/completions", body, "x-mock-abort-after: 5"))
    assert received.partition(b"\r\n\r\n")[2] == b'{"id"'


def _read_until_eof(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_garbage_lines(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=USER,
        stream=True,
        extra_headers={"x-mock-garbage": "1"},
    )
    with pytest.raises(json.JSONDecodeError):
        list(stream)
    stream.close()
    # The Anthropic SDK skips data lines without an event name.
    with ant.messages.stream(
        model=CLAUDE,
        max_tokens=100,
        messages=USER,
        extra_headers={"x-mock-garbage": "1"},
    ) as astream:
        assert astream.get_final_message().usage.output_tokens == 16


def test_delays(oai: openai.OpenAI) -> None:
    started = time.monotonic()
    oai.chat.completions.create(model=MODEL, messages=USER, extra_headers={"x-mock-delay-ms": "150"})
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=USER,
        stream=True,
        extra_headers={"x-mock-chunk-delay-ms": "40", "x-mock-output-tokens": "3"},
    )
    assert len(list(stream)) == 5  # role, 3 words, finish; then [DONE]: 5 gaps of 40 ms
    assert time.monotonic() - started >= 0.2


# --- recording, introspection, HTTP ----------------------------------------------------


def test_introspection_endpoints(raw: httpx.Client, mock: MockUpstream) -> None:
    assert raw.delete("/_mock/requests").status_code == 200
    raw.post("/v1/embeddings?x=1", content=b"\xff\x00", headers={"authorization": "Bearer k"})
    raw.post("/v1/embeddings", json={"model": "e", "input": "hi"}, headers={"authorization": "Bearer k"})
    listed = raw.get("/_mock/requests").json()
    assert [r["path"] for r in listed] == ["/v1/embeddings", "/v1/embeddings"]
    assert listed[0]["query"] == "x=1" and listed[0]["body_b64"] == "/wA="
    assert json.loads(listed[1]["body"]) == {"model": "e", "input": "hi"}
    assert listed[1]["headers"]["authorization"] == "Bearer k"
    assert raw.delete("/_mock/requests").json() == {"cleared": 2}
    assert raw.get("/_mock/requests").json() == [] and mock.requests == []


def test_record_limits() -> None:
    limited, port, stop = run_in_thread()
    try:
        limited.max_recorded = 3
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"authorization": "Bearer k"}
        ) as client:
            for i in range(5):
                client.get(f"/v1/models?i={i}")
            assert [r.query for r in limited.requests] == ["i=2", "i=3", "i=4"]
            limited.record = False
            client.get("/v1/models")
            assert len(limited.requests) == 3
    finally:
        stop()
        stop()  # idempotent


def test_chunked_request_body(raw: httpx.Client, mock: MockUpstream) -> None:
    payload = json.dumps({"model": MODEL, "messages": USER}).encode()
    pieces = iter([payload[:7], payload[7:20], payload[20:]])
    response = raw.post("/v1/chat/completions", content=pieces, headers={"authorization": "Bearer k"})
    assert response.status_code == 200 and response.json()["usage"]["prompt_tokens"] == 3
    recorded = mock.requests[-1]
    assert recorded.header("transfer-encoding") == "chunked" and recorded.body == payload


def test_keep_alive_pipelining_and_continue(mock: MockUpstream) -> None:
    def get(query: str, extra: str = "") -> bytes:
        return (
            f"GET /v1/models?{query} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\n{extra}\r\n".encode()
        )

    with socket.create_connection(("127.0.0.1", mock.port)) as sock:
        sock.settimeout(5)
        # A delayed request, then one that would be answered at once: order is kept.
        sock.sendall(get("a", "x-mock-delay-ms: 50\r\n") + get("b") + get("c", "connection: close\r\n"))
        received = _read_until_eof(sock)
    assert received.count(b"HTTP/1.1 200 OK") == 3 and received.count(b"connection: close") == 1
    assert [r.query for r in mock.requests[-3:]] == ["a", "b", "c"]

    body = json.dumps({"model": MODEL, "messages": USER}).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\n"
        f"expect: 100-continue\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", mock.port)) as sock:
        sock.settimeout(5)
        sock.sendall(head.encode())
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert _read_until_eof(sock).startswith(b"HTTP/1.1 200 OK\r\n")

    with socket.create_connection(("127.0.0.1", mock.port)) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        assert _read_until_eof(sock).startswith(b"HTTP/1.1 400 Bad Request\r\n")


REQUEST = (
    b"POST /v1/messages?beta=true HTTP/1.1\r\nHost: x\r\nX-Api-Key: k\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: t\r\n\r\n"
    b"\r\nGET /v1/models HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi"
)


@pytest.mark.parametrize("split", range(len(REQUEST) + 1))
def test_parser_at_every_split_point(split: int) -> None:
    parser = _RequestParser()
    parsed = []
    for piece in (REQUEST[:split], REQUEST[split:]):
        parser.feed(piece)
        while (result := parser.next_request()) is not None:
            parsed.append(result)
    first = RecordedRequest(
        "POST",
        "/v1/messages",
        "beta=true",
        [("host", "x"), ("x-api-key", "k"), ("transfer-encoding", "chunked")],
        b"hello world",
    )
    second = RecordedRequest("GET", "/v1/models", "", [("content-length", "2")], b"hi")
    assert parsed == [(first, True), (second, False)]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/2\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nx : y\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n", 400),
    ],
)
def test_parser_rejects(data: bytes, status: int) -> None:
    parser = _RequestParser()
    parser.feed(data)
    with pytest.raises(_HttpError) as caught:
        parser.next_request()
    assert caught.value.status == status


# --- async SDKs on the server's own loop, and the command ---------------------------------------


def test_async_sdks() -> None:
    async def scenario() -> None:
        mock = MockUpstream()
        port = await mock.start()
        try:
            async with (
                openai.AsyncOpenAI(
                    base_url=f"http://127.0.0.1:{port}/v1", api_key="sk", max_retries=0
                ) as oai,
                anthropic.AsyncAnthropic(
                    base_url=f"http://127.0.0.1:{port}", api_key="sk", max_retries=0
                ) as ant,
            ):
                stream = await oai.chat.completions.create(
                    model=MODEL,
                    messages=USER,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                chunks = [c async for c in stream]
                assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
                response = await oai.responses.create(model=MODEL, input="hi", stream=True)
                events = [e async for e in response]
                last = events[-1]
                assert last.type == "response.completed" and last.response.usage is not None
                assert last.response.usage.output_tokens == 16
                async with ant.messages.stream(model=CLAUDE, max_tokens=5, messages=USER) as astream:
                    final = await astream.get_final_message()
                assert final.usage.output_tokens == 5
                with pytest.raises(anthropic.RateLimitError):
                    await ant.messages.create(
                        model=CLAUDE,
                        max_tokens=5,
                        messages=USER,
                        extra_headers={"x-mock-status": "429"},
                    )
                bad = await oai.chat.completions.create(
                    model=MODEL,
                    messages=USER,
                    stream=True,
                    extra_headers={"x-mock-abort-after": "1"},
                )
                with pytest.raises(openai.APIConnectionError):
                    _ = [c async for c in bad]
            assert len(mock.requests) == 5
            assert mock.requests[0].header("x-stainless-async") == "async:asyncio"
        finally:
            await mock.stop()

    asyncio.run(scenario())


def test_stop_closes_open_connections() -> None:
    async def scenario() -> None:
        mock = MockUpstream()
        port = await mock.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/models HTTP/1.1\r\nauthorization: Bearer k\r\nx-mock-delay-ms: 10000\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        await mock.stop()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()

    asyncio.run(scenario())


def test_command_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, fakeupstream.server as m; sys.exit(m.main(sys.argv[1:]))",
            "--no-record",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("mock upstream listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        with httpx.Client() as client:
            assert client.get(f"{url}/v1/models", headers={"authorization": "Bearer k"}).status_code == 200
            assert client.get(f"{url}/_mock/requests").json() == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

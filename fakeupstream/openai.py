"""The fake upstream's OpenAI routes: POST /v1/chat/completions,
/v1/completions, /v1/embeddings and /v1/responses, and GET /v1/models. Chat
completions also serve the OpenAI-compatible providers, each with its own
usage quirks (compat.py). Token formulas are in server.py's docstring.

Several answers, as upstream: Chat and legacy Completions return `n` choices
(indexes 0..n-1; streamed, their chunks interleave word by word), each the
same reply, and completion_tokens counts all of them. Legacy `best_of`
generates max(n, best_of) answers, returns n and bills every one generated."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from itertools import chain, zip_longest
from typing import Any

from fakeupstream.compat import quirks_for
from fakeupstream.wire import (
    EMBEDDING_DIMS,
    BadRequest,
    Call,
    Reply,
    count_prompt_tokens,
    dumps,
    json_reply,
    mock_embedding,
    reply_text,
    reply_tokens,
    require,
    sse_data,
    sse_event,
    sse_reply,
    truncated,
    words,
)

__all__ = ["MODELS", "chat", "completions", "embeddings", "json_pieces", "models", "responses", "tool_name"]

MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
    "o4-mini",
    "text-embedding-3-small",
    "gpt-3.5-turbo-instruct",
)
_FINGERPRINT = "fp_mock0000"


def _chunk_framer(head: dict[str, Any], with_usage: bool) -> Callable[[dict[str, Any]], bytes]:
    """`data: {**head, "choices": [choice], ("usage": null)}` with the constant part encoded once."""
    prefix = b"data: " + dumps(head)[:-1] + b',"choices":['
    suffix = b'],"usage":null}\n\n' if with_usage else b"]}\n\n"
    return lambda choice: prefix + dumps(choice) + suffix


def tool_name(tool: object) -> str | None:
    if not isinstance(tool, dict):
        return None
    fn = tool.get("function")
    name = fn.get("name") if isinstance(fn, dict) else tool.get("name")
    return name if isinstance(name, str) else None


def _openai_forced_tool(body: dict[str, Any]) -> str | None:
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not isinstance(tools, list) or not tools:
        return None
    if choice == "required":
        return tool_name(tools[0])
    return tool_name(choice) if isinstance(choice, dict) else None


def _chat_usage(call: Call, completion: int) -> dict[str, Any]:
    prompt = count_prompt_tokens(call.body)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": min(call.knobs.cached_tokens, prompt), "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _answers(body: dict[str, Any], field: str = "n") -> int:
    value = body.get(field)
    return value if type(value) is int and value > 1 else 1


def _interleaved(streams: list[list[bytes]]) -> list[bytes]:
    """Each choice's chunks in turn, as upstream streams several choices."""
    return [event for event in chain.from_iterable(zip_longest(*streams)) if event is not None]


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def chat(call: Call) -> Reply:
    body = call.body
    quirks = quirks_for(call.provider)
    model = require(body, "model", str, "openai")
    require(body, "messages", list, "openai")
    if quirks.rejects_stream_options is not None and "stream_options" in body:
        return quirks.rejects_stream_options(call.rid)
    tool = _openai_forced_tool(body)
    n = reply_tokens(body, call.knobs.output_tokens)
    answers = _answers(body)
    finish = "length" if truncated(body, call.knobs.output_tokens) else "tool_calls" if tool else "stop"
    usage = quirks.usage(_chat_usage(call, n * answers), call)
    call_id = f"call_{call.rid[:24]}"
    head = {
        "id": f"chatcmpl-{call.rid}",
        "object": "chat.completion",
        "created": call.created,
        "model": model,
    }
    if not body.get("stream"):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply_text(n),
            "refusal": None,
            "annotations": [],
        }
        if tool:
            arguments = json.dumps({"input": reply_text(n)})
            message["content"] = None
            message["tool_calls"] = [
                {"id": call_id, "type": "function", "function": {"name": tool, "arguments": arguments}}
            ]
        choices = [
            {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
            for i in range(answers)
        ]
        reply = {**head, "choices": choices, "usage": usage, "service_tier": "default"}
        return json_reply({**reply, "system_fingerprint": _FINGERPRINT, **quirks.extra}, "openai", call.rid)

    head.update(object="chat.completion.chunk", service_tier="default", system_fingerprint=_FINGERPRINT)
    with_usage = quirks.stream_usage == "chunk" and _include_usage(body)
    frame = _chunk_framer(head, with_usage)

    def answer(index: int) -> list[bytes]:
        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            return frame({"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason})

        if tool:
            start = {
                "index": 0,
                "id": call_id,
                "type": "function",
                "function": {"name": tool, "arguments": ""},
            }
            events = [chunk({"role": "assistant", "content": None, "tool_calls": [start], "refusal": None})]
            events += [
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                for piece in json_pieces({"input": reply_text(n)})
            ]
        else:
            events = [chunk({"role": "assistant", "content": "", "refusal": None})]
            events += [chunk({"content": word}) for word in words(n)]
        if index < answers - 1:  # the last choice's finish carries the provider's usage quirks
            events.append(chunk({}, finish))
        return events

    events = _interleaved([answer(i) for i in range(answers)])
    finishing = {"index": answers - 1, "delta": {}, "logprobs": None, "finish_reason": finish}
    if quirks.stream_usage == "choice":  # Moonshot
        events.append(sse_data({**head, "choices": [{**finishing, "usage": usage}]}))
    elif quirks.stream_usage == "finish":  # Mistral
        events.append(sse_data({**head, "choices": [finishing], "usage": usage, **quirks.extra}))
    else:
        events.append(frame(finishing))
        if with_usage:
            events.append(sse_data({**head, "choices": [], "usage": usage, **quirks.extra}))
    events.append(b"data: [DONE]\n\n")
    return sse_reply(events, "openai", call.rid, call.knobs)


def json_pieces(obj: dict[str, Any]) -> list[str]:
    """A JSON document split the way models stream tool arguments: word by word."""
    text = json.dumps(obj)
    pieces, start = [], 0
    while start < len(text):
        end = text.find(" ", start + 1)
        end = len(text) if end < 0 else end
        pieces.append(text[start:end])
        start = end
    return pieces


def completions(call: Call) -> Reply:
    body = call.body
    model = require(body, "model", str, "openai")
    if "prompt" not in body:
        raise BadRequest("Missing required parameter: 'prompt'.", "prompt")
    n = reply_tokens(body, call.knobs.output_tokens)
    answers = _answers(body)
    if body.get("stream") and _answers(body, "best_of") > 1:
        raise BadRequest("best_of cannot be used with stream.", "best_of")
    generated = max(answers, _answers(body, "best_of"))
    finish = "length" if truncated(body, call.knobs.output_tokens) else "stop"
    head = {"id": f"cmpl-{call.rid}", "object": "text_completion", "created": call.created, "model": model}
    prompt = count_prompt_tokens(body)
    completion = n * generated
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if not body.get("stream"):
        choices = [
            {"text": reply_text(n), "index": i, "logprobs": None, "finish_reason": finish}
            for i in range(answers)
        ]
        return json_reply({**head, "choices": choices, "usage": usage}, "openai", call.rid)
    with_usage = _include_usage(body)
    frame = _chunk_framer(head, with_usage)

    def answer(index: int) -> list[bytes]:
        def chunk(text: str, finish_reason: str | None = None) -> bytes:
            return frame({"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason})

        return [*(chunk(word) for word in words(n)), chunk("", finish)]

    events = _interleaved([answer(i) for i in range(answers)])
    if with_usage:
        events.append(sse_data({**head, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return sse_reply(events, "openai", call.rid, call.knobs)


def embeddings(call: Call) -> Reply:
    body = call.body
    model = require(body, "model", str, "openai")
    raw = body.get("input")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw)):
        items: list[Any] = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, str | list) for x in raw):
        items = raw
    else:
        raise BadRequest(
            "'input' must be a string, an array of strings or an array of token arrays.", "input"
        )
    dims = body.get("dimensions", EMBEDDING_DIMS)
    if not isinstance(dims, int) or not 1 <= dims <= 4096:
        raise BadRequest("'dimensions' must be an integer between 1 and 4096.", "dimensions")
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(items):
        vector: Any = mock_embedding(item, dims)
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    prompt = count_prompt_tokens(body)
    usage = {"prompt_tokens": prompt, "total_tokens": prompt}
    return json_reply({"object": "list", "data": data, "model": model, "usage": usage}, "openai", call.rid)


def responses(call: Call) -> Reply:
    body = call.body
    model = require(body, "model", str, "openai")
    if "input" not in body and "instructions" not in body:
        raise BadRequest("Missing required parameter: 'input'.", "input")
    n = reply_tokens(body, call.knobs.output_tokens)
    incomplete = truncated(body, call.knobs.output_tokens)
    prompt = count_prompt_tokens(body)
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": min(call.knobs.cached_tokens, prompt)},
        "output_tokens": n,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + n,
    }
    status = "incomplete" if incomplete else "completed"
    text = reply_text(n)
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    item = {
        "id": f"msg_{call.rid}",
        "type": "message",
        "status": status,
        "content": [part],
        "role": "assistant",
    }

    def response(state: str, output: list[Any], used: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": f"resp_{call.rid}",
            "object": "response",
            "created_at": call.created,
            "status": state,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if state == "incomplete" else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []),
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": used,
            "user": None,
            "metadata": body.get("metadata") or {},
        }

    if not body.get("stream"):
        return json_reply(response(status, [item], usage), "openai", call.rid)
    events: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append(sse_event(kind, {"type": kind, "sequence_number": len(events), **fields}))

    where = {"item_id": item["id"], "output_index": 0}
    emit("response.created", response=response("in_progress", [], None))
    emit("response.in_progress", response=response("in_progress", [], None))
    emit("response.output_item.added", output_index=0, item={**item, "status": "in_progress", "content": []})
    emit("response.content_part.added", **where, content_index=0, part={**part, "text": ""})
    for word in words(n):
        emit("response.output_text.delta", **where, content_index=0, delta=word, logprobs=[])
    emit("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
    emit("response.content_part.done", **where, content_index=0, part=part)
    emit("response.output_item.done", output_index=0, item=item)
    emit(f"response.{status}", response=response(status, [item], usage))
    return sse_reply(events, "openai", call.rid, call.knobs)


def models(call: Call) -> Reply:
    data = [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "system"} for m in MODELS]
    return json_reply({"object": "list", "data": data}, "openai", call.rid)

"""The fake upstream's Anthropic routes: POST /v1/messages (JSON or SSE, with
extended thinking, forced tool use and prompt caching) and
/v1/messages/count_tokens. Token formulas are in server.py's docstring."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from fakeupstream.openai import json_pieces, tool_name
from fakeupstream.wire import (
    THINKING_WORDS,
    Call,
    Reply,
    cache_split,
    count_prompt_tokens,
    json_reply,
    reply_text,
    reply_tokens,
    require,
    sse_event,
    sse_reply,
    thinking_tokens,
    truncated,
    words,
)

__all__ = ["count_tokens", "messages"]


def _anthropic_forced_tool(body: dict[str, Any]) -> str | None:
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not isinstance(tools, list) or not tools or not isinstance(choice, dict):
        return None
    if choice.get("type") == "any":
        return tool_name(tools[0])
    return tool_name(choice) if choice.get("type") == "tool" else None


def messages(call: Call) -> Reply:
    body = call.body
    model = require(body, "model", str, "anthropic")
    require(body, "max_tokens", int, "anthropic")
    require(body, "messages", list, "anthropic")
    fresh, creation, read, ttl = cache_split(body, call.prompt_cache)
    think = thinking_tokens(body)
    n = reply_tokens(body, call.knobs.output_tokens)
    tool = _anthropic_forced_tool(body)
    stop = "max_tokens" if truncated(body, call.knobs.output_tokens) else "tool_use" if tool else "end_turn"
    thought = "".join(words(think, THINKING_WORDS))
    signature = base64.b64encode(hashlib.sha256(thought.encode() + call.rid.encode()).digest()).decode()
    usage = {
        "input_tokens": fresh,
        "cache_creation_input_tokens": creation,
        "cache_read_input_tokens": read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": creation if ttl == "5m" else 0,
            "ephemeral_1h_input_tokens": creation if ttl == "1h" else 0,
        },
        "output_tokens": think + n,
        "service_tier": "standard",
    }
    searches = (
        {"server_tool_use": {"web_search_requests": call.knobs.web_searches}}
        if call.knobs.web_searches
        else {}
    )
    usage.update(searches)
    tool_id = f"toolu_{call.rid[:24]}"
    blocks: list[dict[str, Any]] = []
    if think:
        blocks.append({"type": "thinking", "thinking": thought, "signature": signature})
    if tool:
        blocks.append({"type": "tool_use", "id": tool_id, "name": tool, "input": {"input": reply_text(n)}})
    else:
        blocks.append({"type": "text", "text": reply_text(n)})
    message = {"id": f"msg_{call.rid}", "type": "message", "role": "assistant", "model": model}
    if not body.get("stream"):
        full = {**message, "content": blocks, "stop_reason": stop, "stop_sequence": None, "usage": usage}
        return json_reply(full, "anthropic", call.rid)

    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events = [sse_event("message_start", {"type": "message_start", "message": start})]

    def block(index: int, opening: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
        events.append(
            sse_event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
        )
        if index == 0:
            events.append(b'event: ping\ndata: {"type": "ping"}\n\n')
        for delta in deltas:
            events.append(
                sse_event(
                    "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
                )
            )
        events.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": index}))

    if think:
        deltas = [{"type": "thinking_delta", "thinking": w} for w in words(think, THINKING_WORDS)]
        block(
            0,
            {"type": "thinking", "thinking": "", "signature": ""},
            [*deltas, {"type": "signature_delta", "signature": signature}],
        )
    index = 1 if think else 0
    if tool:
        pieces = ["", *json_pieces({"input": reply_text(n)})]
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
        block(index, {"type": "tool_use", "id": tool_id, "name": tool, "input": {}}, deltas)
    else:
        block(index, {"type": "text", "text": ""}, [{"type": "text_delta", "text": w} for w in words(n)])
    delta = {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}}
    events.append(sse_event("message_delta", {**delta, "usage": {"output_tokens": think + n, **searches}}))
    events.append(sse_event("message_stop", {"type": "message_stop"}))
    return sse_reply(events, "anthropic", call.rid, call.knobs)


def count_tokens(call: Call) -> Reply:
    require(call.body, "model", str, "anthropic")
    require(call.body, "messages", list, "anthropic")
    return json_reply({"input_tokens": count_prompt_tokens(call.body)}, "anthropic", call.rid)

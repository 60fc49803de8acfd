"""The fake upstream's Gemini routes (Google AI Studio, the Generative Language API).

POST /{v1beta|v1}/models/{model}:generateContent, :streamGenerateContent,
:countTokens, :embedContent and :batchEmbedContents, authenticated by
`x-goog-api-key` (or `?key=`). A missing key is a 403 PERMISSION_DENIED, a
bearer token instead of a key a 401 UNAUTHENTICATED, both Google-shaped:
`{"error": {"code", "message", "status"}}`.

Wire format, as Google's front end sends it: JSON bodies are pretty-printed
(two-space indents). `:streamGenerateContent?alt=sse` is SSE, `data: {chunk}`
events ended by `\\r\\n\\r\\n`, no event names and no `[DONE]`; without
`alt=sse` it is one JSON array whose elements arrive one by one
(`[{…}` then `\\n,\\r\\n{…}` … then `\\n]`). Every chunk carries the
cumulative `usageMetadata`.

Token counts (compare server.py's docstring):

* prompt: `count_prompt_tokens` over systemInstruction, tools and contents
  (`role` values are not counted). `cachedContentTokenCount` is
  x-mock-cached-tokens (at most the prompt), included in `promptTokenCount`
  and omitted when 0.
* thinking: `thoughts` = THINKING_TOKENS (at most maxOutputTokens) when
  generationConfig.thinkingConfig.thinkingBudget is a positive integer, else
  0. Reported as `thoughtsTokenCount`, outside `candidatesTokenCount`. The
  thought text is sent (as `"thought": true` parts) only with includeThoughts.
* answer: `n = min(desired, maxOutputTokens − thoughts)` words, desired being
  x-mock-output-tokens or 16; finishReason "MAX_TOKENS" iff desired + thoughts
  exceeds maxOutputTokens, else "STOP". Streamed one word per chunk;
  `candidatesTokenCount` counts the words sent so far.
* embeddings: each content's tokens, summed. `:batchEmbedContents` reports
  them in `usageMetadata.promptTokenCount`; `:embedContent` reports nothing
  (so a gateway must estimate). Vectors are `mock_embedding` of the text, 8
  floats or `outputDimensionality`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fakeupstream.wire import (
    DEFAULT_REPLY_TOKENS,
    EMBEDDING_DIMS,
    THINKING_TOKENS,
    THINKING_WORDS,
    BadRequest,
    Call,
    Reply,
    count_prompt_tokens,
    error_reply,
    mock_embedding,
    pretty,
    request_id_header,
    words,
)

__all__ = ["GEMINI_PATH", "PROMPT_FIELDS", "authorize", "route"]

GEMINI_PATH = re.compile(r"^/(v1beta|v1|v1alpha)/models/([^/:]+):(\w+)$")
PROMPT_FIELDS = ("systemInstruction", "tools", "contents")
_JSON = ("content-type", "application/json; charset=UTF-8")
_SSE = ("content-type", "text/event-stream")
_sse_encode = json.JSONEncoder(separators=(",", ": "), ensure_ascii=False).encode


def authorize(headers: Callable[[str], str | None], query: str, rid: str) -> Reply | None:
    """None when the request carries an API key, else the error Google answers."""
    key = (headers("x-goog-api-key") or "").strip()
    if key or re.search(r"(^|&)key=[^&]", query):
        return None
    if (headers("authorization") or "").lower().startswith("bearer "):
        message = (
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
            "or other valid authentication credential."
        )
        return error_reply("google", 401, message, rid)
    message = (
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API."
    )
    return error_reply("google", 403, message, rid)


def _get(obj: object, camel: str) -> object:
    """A field by its JSON name or its proto name (the API takes both; google-genai sends some snake_case)."""
    if not isinstance(obj, dict):
        return None
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return obj.get(camel, obj.get(snake))


def _int(value: object) -> int | None:
    return value if type(value) is int and value >= 0 else None


@dataclass(frozen=True)
class _Plan:
    prompt: int
    cached: int
    thoughts: int
    shown: bool  # whether the thought text is sent (includeThoughts)
    answer: int  # words, one token each
    cut: bool  # MAX_TOKENS

    @property
    def finish(self) -> str:
        return "MAX_TOKENS" if self.cut else "STOP"


def _plan(call: Call) -> _Plan:
    body = call.body
    if not isinstance(body.get("contents"), list) or not body["contents"]:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified\n")
    config = _get(body, "generationConfig")
    limit = _int(_get(config, "maxOutputTokens"))
    thinking = _get(config, "thinkingConfig")
    thoughts = min(THINKING_TOKENS, THINKING_TOKENS if limit is None else limit)
    if not _int(_get(thinking, "thinkingBudget")):
        thoughts = 0
    desired = DEFAULT_REPLY_TOKENS if call.knobs.output_tokens is None else call.knobs.output_tokens
    prompt = count_prompt_tokens(body, PROMPT_FIELDS)
    return _Plan(
        prompt=prompt,
        cached=min(call.knobs.cached_tokens, prompt),
        thoughts=thoughts,
        shown=bool(thoughts and _get(thinking, "includeThoughts") is True),
        answer=desired if limit is None else max(0, min(desired, limit - thoughts)),
        cut=limit is not None and desired + thoughts > limit,
    )


def _usage(prompt: int, cached: int, answer: int | None, thoughts: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"promptTokenCount": prompt}
    if answer is not None:
        meta["candidatesTokenCount"] = answer
    meta["totalTokenCount"] = prompt + (answer or 0) + thoughts
    if cached:
        meta["cachedContentTokenCount"] = cached
    meta["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if cached:
        meta["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    return meta


def _chunk(
    call: Call, parts: list[dict[str, Any]], finish: str | None, meta: dict[str, Any]
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"} if parts else {"role": "model"}}
    if finish is not None:
        candidate["finishReason"] = finish
        if call.knobs.web_searches:
            queries = [f"search {i + 1}" for i in range(call.knobs.web_searches)]
            candidate["groundingMetadata"] = {"webSearchQueries": queries, "groundingChunks": []}
    candidate["index"] = 0
    return {
        "candidates": [candidate],
        "usageMetadata": meta,
        "modelVersion": call.path_params.get("model", ""),
        "responseId": call.rid[:22],
    }


def generate(call: Call) -> Reply:
    plan = _plan(call)
    thought = [{"text": "".join(words(plan.thoughts, THINKING_WORDS)), "thought": True}] if plan.shown else []
    text = [{"text": "".join(words(plan.answer))}] if plan.answer else []
    meta = _usage(plan.prompt, plan.cached, plan.answer, plan.thoughts)
    body = _chunk(call, thought + text, plan.finish, meta)
    return Reply(200, (_JSON, request_id_header("google", call.rid)), pretty(body) + b"\n")


def stream_generate(call: Call) -> Reply:
    plan = _plan(call)
    chunks = []
    if plan.shown:
        meta = _usage(plan.prompt, plan.cached, None, plan.thoughts)
        for word in words(plan.thoughts, THINKING_WORDS):
            chunks.append(_chunk(call, [{"text": word, "thought": True}], None, meta))
    answer = words(plan.answer) or [""]
    for i, word in enumerate(answer):
        finish = plan.finish if i == len(answer) - 1 else None
        meta = _usage(plan.prompt, plan.cached, min(i + 1, plan.answer), plan.thoughts)
        chunks.append(_chunk(call, [{"text": word}] if word else [], finish, meta))
    if re.search(r"(^|&)alt=sse(&|$)", call.query):
        events = [b"data: " + _sse_encode(chunk).encode() + b"\r\n\r\n" for chunk in chunks]
        if call.knobs.garbage:
            events = [e for i, ev in enumerate(events) for e in (b"data: garbage %d {{\r\n\r\n" % i, ev)]
        return Reply(200, (_SSE, request_id_header("google", call.rid)), events=tuple(events))
    pieces = [(b"[" if i == 0 else b"\n,\r\n") + pretty(chunk) for i, chunk in enumerate(chunks)]
    return Reply(200, (_JSON, request_id_header("google", call.rid)), events=(*pieces, b"\n]"))


def count(call: Call) -> Reply:
    body = call.body
    inner = body.get("generateContentRequest")
    source = inner if isinstance(inner, dict) else body
    if not isinstance(source.get("contents"), list):
        raise BadRequest("* CountTokensRequest.contents: contents is not specified\n")
    total = count_prompt_tokens(source, PROMPT_FIELDS)
    reply = {"totalTokens": total, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]}
    return Reply(200, (_JSON, request_id_header("google", call.rid)), pretty(reply) + b"\n")


def _embedding(request: object) -> tuple[list[float], int]:
    if not isinstance(request, dict) or not isinstance(request.get("content"), dict):
        raise BadRequest("* EmbedContentRequest.content: content is not specified\n")
    dims = _get(request, "outputDimensionality")
    dims = EMBEDDING_DIMS if dims is None else dims
    if type(dims) is not int or not 1 <= dims <= 3072:
        raise BadRequest("* EmbedContentRequest.output_dimensionality: must be between 1 and 3072\n")
    content = request["content"]
    return mock_embedding(content, dims), count_prompt_tokens({"content": content}, ("content",))


def embed(call: Call) -> Reply:
    values, _ = _embedding(call.body)
    reply = {"embedding": {"values": values}}
    return Reply(200, (_JSON, request_id_header("google", call.rid)), pretty(reply) + b"\n")


def batch_embed(call: Call) -> Reply:
    requests = call.body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise BadRequest("* BatchEmbedContentsRequest.requests: requests is not specified\n")
    done = [_embedding(request) for request in requests]
    used = sum(n for _, n in done)
    reply = {
        "embeddings": [{"values": values} for values, _ in done],
        "usageMetadata": {
            "promptTokenCount": used,
            "promptTokenDetails": [{"modality": "TEXT", "tokenCount": used}],
        },
    }
    return Reply(200, (_JSON, request_id_header("google", call.rid)), pretty(reply) + b"\n")


_METHODS: dict[str, Callable[[Call], Reply]] = {
    "generateContent": generate,
    "streamGenerateContent": stream_generate,
    "countTokens": count,
    "embedContent": embed,
    "batchEmbedContents": batch_embed,
}


def route(method: str, path: str) -> tuple[Callable[[Call], Reply], dict[str, str]] | None:
    """The handler for a Gemini URL, and its path parameters; None if it is not one."""
    match = GEMINI_PATH.match(path)
    if method != "POST" or match is None or match.group(3) not in _METHODS:
        return None
    return _METHODS[match.group(3)], {"version": match.group(1), "model": match.group(2)}

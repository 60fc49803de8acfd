"""What the fake upstream says, independent of HTTP: deterministic token
accounting (the formulas are in server.py's docstring) and the building
blocks every provider's routes reply with. Pure functions and frozen
dataclasses; the server in server.py renders `Reply` on the wire."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

DEFAULT_REPLY_TOKENS = 16
THINKING_TOKENS = 8
EMBEDDING_DIMS = 8
REPLY_WORDS = ("mock", "reply", "from", "the", "fake", "upstream")
THINKING_WORDS = ("let", "me", "think", "about", "this", "mock", "request", "first")

PROMPT_FIELDS = ("tools", "system", "instructions", "messages", "prompt", "input")
_SKIPPED_KEYS = frozenset(
    {
        "type",
        "role",
        "id",
        "tool_use_id",
        "tool_call_id",
        "call_id",
        "signature",
        "cache_control",
        "media_type",
    }
)

Flavor = Literal["openai", "anthropic", "google"]


# --- token accounting (pure) -------------------------------------------------


def _prompt_pieces(body: dict[str, Any], fields: Sequence[str] = PROMPT_FIELDS) -> list[bytes | str]:
    """The counted text of a request as byte strings, in order. A `str` item
    marks the end of a block that has `cache_control`; its value is the TTL."""
    out: list[bytes | str] = []

    def walk(node: object, key: str, token_ids: bool) -> None:
        if isinstance(node, str):
            if key not in _SKIPPED_KEYS:
                out.append(node.encode())
        elif isinstance(node, bool):
            pass
        elif isinstance(node, int):
            if token_ids:
                out.append(b"\0\0\0\0")
        elif isinstance(node, list):
            for item in node:
                walk(item, key, token_ids)
        elif isinstance(node, dict):
            for k, v in node.items():
                if k not in _SKIPPED_KEYS:
                    walk(v, k, False)
            cache = node.get("cache_control")
            if isinstance(cache, dict):
                out.append(str(cache.get("ttl") or "5m"))

    for name in fields:
        if name in body:
            walk(body[name], name, name in ("prompt", "input"))
    return out


def tokens(n_bytes: int) -> int:
    return math.ceil(n_bytes / 4)


def count_prompt_tokens(body: dict[str, Any], fields: Sequence[str] = PROMPT_FIELDS) -> int:
    """ceil(UTF-8 bytes of the request's text / 4); see server.py's docstring.
    `fields` are the top-level body fields holding the prompt (Gemini's differ)."""
    return tokens(sum(len(p) for p in _prompt_pieces(body, fields) if isinstance(p, bytes)))


def output_limit(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_output_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return max(value, 0)
    return None


def thinking_tokens(body: dict[str, Any]) -> int:
    """Tokens of the thinking block the mock emits (Anthropic extended thinking)."""
    thinking = body.get("thinking")
    if not (isinstance(thinking, dict) and thinking.get("type") == "enabled"):
        return 0
    limit = output_limit(body)
    return THINKING_TOKENS if limit is None else min(THINKING_TOKENS, limit)


def reply_tokens(body: dict[str, Any], forced: int | None = None) -> int:
    """Words in the visible reply (text or tool arguments), excluding thinking."""
    desired = DEFAULT_REPLY_TOKENS if forced is None else forced
    limit = output_limit(body)
    return desired if limit is None else max(0, min(desired, limit - thinking_tokens(body)))


def truncated(body: dict[str, Any], forced: int | None) -> bool:
    limit = output_limit(body)
    desired = DEFAULT_REPLY_TOKENS if forced is None else forced
    return limit is not None and desired + thinking_tokens(body) > limit


def words(n: int, words: Sequence[str] = REPLY_WORDS) -> list[str]:
    """The stream deltas of an n-token reply: the first word bare, then ' word'."""
    return [("" if i == 0 else " ") + words[i % len(words)] for i in range(n)]


def reply_text(n: int) -> str:
    return "".join(words(n))


def mock_embedding(item: object, dimensions: int = EMBEDDING_DIMS) -> list[float]:
    """A deterministic vector for one input item (a string or a token array)."""
    seed = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
    raw = b""
    while len(raw) < dimensions:
        raw += hashlib.sha256(seed + len(raw).to_bytes(4, "big")).digest()
    return [(b - 128) / 128 for b in raw[:dimensions]]


def cache_split(body: dict[str, Any], seen: set[bytes]) -> tuple[int, int, int, str]:
    """(input, cache_creation, cache_read, ttl of the writes) for an Anthropic request."""
    digest = hashlib.sha256(str(body.get("model")).encode())
    size = 0
    marks: list[tuple[int, bytes, str]] = []
    for piece in _prompt_pieces(body):
        if isinstance(piece, str):
            marks.append((size, digest.copy().digest(), piece))
        else:
            digest.update(len(piece).to_bytes(8, "big") + piece)
            size += len(piece)
    total = tokens(size)
    if not marks:
        return total, 0, 0, "5m"
    read = tokens(max((at for at, key, _ in marks if key in seen), default=0))
    last = tokens(marks[-1][0])
    seen.update(key for _, key, _ in marks)
    ttl = "1h" if any(t == "1h" for _, _, t in marks) else "5m"
    return total - last, last - read, read, ttl


# --- replies -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    events: tuple[bytes, ...] | None = None  # SSE events, sent as one chunk each


@dataclass(frozen=True, slots=True)
class Knobs:
    status: int | None = None
    delay_ms: int = 0
    chunk_delay_ms: int = 0
    abort_after: int | None = None
    output_tokens: int | None = None
    cached_tokens: int = 0
    garbage: bool = False
    web_searches: int = 0
    ratelimit_headers: bool = False
    gateway_headers: bool = False

    @property
    def immediate(self) -> bool:
        return not self.delay_ms and not self.chunk_delay_ms and self.abort_after is None


NO_KNOBS = Knobs()
_KNOB_FIELDS = {
    "x-mock-status": "status",
    "x-mock-delay-ms": "delay_ms",
    "x-mock-chunk-delay-ms": "chunk_delay_ms",
    "x-mock-abort-after": "abort_after",
    "x-mock-output-tokens": "output_tokens",
    "x-mock-cached-tokens": "cached_tokens",
    "x-mock-garbage": "garbage",
    "x-mock-web-searches": "web_searches",
    "x-mock-ratelimit-headers": "ratelimit_headers",
    "x-mock-gateway-headers": "gateway_headers",
}
# What x-mock-ratelimit-headers: 1 adds to a reply: OpenAI's account-wide limits.
PROVIDER_RATELIMIT_HEADERS = (
    ("x-ratelimit-limit-requests", "10000"),
    ("x-ratelimit-remaining-requests", "9999"),
    ("x-ratelimit-reset-requests", "6ms"),
    ("x-ratelimit-limit-tokens", "30000000"),
    ("x-ratelimit-remaining-tokens", "29999990"),
    ("x-ratelimit-reset-tokens", "0s"),
)
# What x-mock-gateway-headers: 1 adds: a gateway's own headers, as from a provider behind one.
GATEWAY_HEADERS = (
    ("x-spendgate-cost-micros", "987654"),
    ("x-spendgate-remaining-micros", "123"),
    ("x-spendgate-request-id", "req_of_the_provider"),
)


def parse_knobs(headers: list[tuple[str, str]]) -> Knobs:
    values: dict[str, Any] = {}
    for name, value in headers:
        field = _KNOB_FIELDS.get(name)
        if field is None:
            continue
        if not value.isdigit():
            raise ValueError(f"header {name} must be a non-negative integer, got {value!r}")
        values[field] = (
            bool(int(value)) if field in ("garbage", "ratelimit_headers", "gateway_headers") else int(value)
        )
    if values.get("status", 400) < 400:
        del values["status"]
    return Knobs(**values) if values else NO_KNOBS


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(obj: object) -> bytes:
    return _encode(obj).encode()


def pretty(obj: object) -> bytes:
    """JSON as Google's front ends print it: two-space indents, `": "` after keys."""
    return json.dumps(obj, indent=2, ensure_ascii=False).encode()


def request_id_header(flavor: Flavor, rid: str) -> tuple[str, str]:
    return ("request-id" if flavor == "anthropic" else "x-request-id", f"req_{rid}")


def json_content_type(flavor: Flavor) -> str:
    return "application/json; charset=UTF-8" if flavor == "google" else "application/json"


def json_reply(obj: object, flavor: Flavor, rid: str, status: int = 200) -> Reply:
    return Reply(
        status, (("content-type", json_content_type(flavor)), request_id_header(flavor, rid)), dumps(obj)
    )


def sse_reply(events: list[bytes], flavor: Flavor, rid: str, knobs: Knobs) -> Reply:
    if knobs.garbage:
        events = [e for i, ev in enumerate(events) for e in (b"data: garbage %d {{not json\n\n" % i, ev)]
    headers = (
        ("content-type", "text/event-stream; charset=utf-8"),
        ("cache-control", "no-cache"),
        request_id_header(flavor, rid),
    )
    return Reply(200, headers, events=tuple(events))


def sse_data(obj: object) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def sse_event(name: str, obj: object) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(obj) + b"\n\n"


_OPENAI_ERROR_TYPES = {401: "invalid_request_error", 403: "permission_error", 429: "tokens"}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_reply(flavor: Flavor, status: int, message: str, rid: str, *, param: str | None = None) -> Reply:
    if flavor == "google":
        kind = GOOGLE_STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        error = {"error": {"code": status, "message": message, "status": kind}}
        return Reply(status, (("content-type", json_content_type(flavor)),), pretty(error) + b"\n")
    if flavor == "anthropic":
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": f"req_{rid}",
        }
    else:
        kind = _OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        code = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded"}.get(status)
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return json_reply(body, flavor, rid, status)


class BadRequest(Exception):
    """A request the provider would reject with 400; carries the offending param."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def require(body: dict[str, Any], key: str, kind: type | tuple[type, ...], flavor: Flavor) -> Any:
    value = body.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        if flavor == "anthropic":
            raise BadRequest(f"{key}: Field required" if value is None else f"{key}: invalid value", key)
        raise BadRequest(f"Missing required parameter: '{key}'.", key)
    return value


@dataclass(frozen=True, slots=True)
class Call:
    """Everything a route needs to build its reply."""

    body: dict[str, Any]
    knobs: Knobs
    rid: str  # fresh random hex, the suffix of every id in this reply
    created: int
    prompt_cache: set[bytes]
    provider: str = ""  # the upstream a path prefix named (/deepseek/v1/…), "" when none
    query: str = ""
    path_params: dict[str, str] = field(default_factory=dict)  # e.g. Gemini's model

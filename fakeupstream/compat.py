"""How the OpenAI-compatible providers' chat completions differ from OpenAI's,
as the fake upstream plays them.

The mock serves each provider under a path prefix (`/deepseek/v1/…`,
`/mistral/v1/…`); the prefix picks the `Quirks` below. What each one changes:

* deepseek: usage adds `prompt_cache_hit_tokens` / `prompt_cache_miss_tokens`
  (hits = x-mock-cached-tokens; hit + miss = prompt_tokens), alongside
  `prompt_tokens_details.cached_tokens`.
* moonshot: cache hits are a top-level `cached_tokens`; a stream always ends
  with its usage inside the finishing choice, `choices[0].usage`, whatever
  stream_options says.
* mistral: a stream's finishing chunk always carries top-level `usage`; a
  request carrying `stream_options` is refused with a 422 in Mistral's flat
  error shape. Usage has no details.
* xai: reasoning models (any model not named `…non-reasoning`) think for
  THINKING_TOKENS tokens, reported in `completion_tokens_details.
  reasoning_tokens` and counted OUTSIDE `completion_tokens`:
  total_tokens = prompt + completion + reasoning.
* minimax: bodies and the usage chunk carry `base_resp: {status_code: 0}`;
  errors (x-mock-status, a missing key) come back as HTTP 200 with a non-zero
  `base_resp.status_code` and no choices.
* cerebras: bodies and the usage chunk carry `time_info`.
* qwen: OpenAI's behaviour (usage only with stream_options.include_usage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fakeupstream.wire import THINKING_TOKENS, Call, Reply, dumps, request_id_header

__all__ = ["COMPATIBLE", "Quirks", "quirks_for"]

Usage = dict[str, Any]


def _same(usage: Usage, call: Call) -> Usage:
    return usage


def _cached(usage: Usage) -> int:
    return int(usage.get("prompt_tokens_details", {}).get("cached_tokens", 0))


def _plain(usage: Usage) -> Usage:
    return {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def _deepseek(usage: Usage, call: Call) -> Usage:
    hit = _cached(usage)
    return {
        **_plain(usage),
        "prompt_tokens_details": {"cached_tokens": hit},
        "prompt_cache_hit_tokens": hit,
        "prompt_cache_miss_tokens": usage["prompt_tokens"] - hit,
    }


def _moonshot(usage: Usage, call: Call) -> Usage:
    return {**_plain(usage), "cached_tokens": _cached(usage)}


def _mistral(usage: Usage, call: Call) -> Usage:
    return _plain(usage)


def xai_reasoning_tokens(model: object) -> int:
    return 0 if "non-reasoning" in str(model) else THINKING_TOKENS


def _xai(usage: Usage, call: Call) -> Usage:
    thought = xai_reasoning_tokens(call.body.get("model"))
    out = {**_plain(usage), "prompt_tokens_details": {"cached_tokens": _cached(usage), "text_tokens": 0}}
    out["total_tokens"] += thought
    out["completion_tokens_details"] = {"reasoning_tokens": thought, "audio_tokens": 0}
    out["num_sources_used"] = 0
    return out


def _cached_only(usage: Usage, call: Call) -> Usage:
    return {**_plain(usage), "prompt_tokens_details": {"cached_tokens": _cached(usage)}}


def _minimax_error(status: int, message: str, rid: str) -> Reply:
    code = {401: 2049, 402: 1008, 429: 1002}.get(status, 1000 if status >= 500 else 2013)
    body = {"id": rid, "choices": None, "base_resp": {"status_code": code, "status_msg": message}}
    return Reply(200, (("content-type", "application/json"), request_id_header("openai", rid)), dumps(body))


def _mistral_rejection(rid: str) -> Reply:
    body = {
        "object": "error",
        "message": "Extra inputs are not permitted: stream_options",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    return Reply(422, (("content-type", "application/json"),), dumps(body))


@dataclass(frozen=True)
class Quirks:
    usage: Callable[[Usage, Call], Usage] = _same
    # Where a stream's usage goes. "chunk": OpenAI's `choices: []` chunk, only when
    # stream_options.include_usage is set. "finish": top-level `usage` on the
    # finishing chunk, always. "choice": `choices[0].usage` of the finishing chunk, always.
    stream_usage: Literal["chunk", "finish", "choice"] = "chunk"
    extra: dict[str, Any] = field(default_factory=dict)  # top-level fields on bodies and usage chunks
    rejects_stream_options: Callable[[str], Reply] | None = None
    error_in_body: Callable[[int, str, str], Reply] | None = None  # (status, message, rid) -> 200 reply


_OPENAI = Quirks()
_QUIRKS = {
    "xai": Quirks(usage=_xai),
    "qwen": Quirks(usage=_cached_only),
    "moonshot": Quirks(usage=_moonshot, stream_usage="choice"),
    "minimax": Quirks(
        usage=_cached_only,
        extra={"base_resp": {"status_code": 0, "status_msg": ""}},
        error_in_body=_minimax_error,
    ),
    "deepseek": Quirks(usage=_deepseek),
    "mistral": Quirks(usage=_mistral, stream_usage="finish", rejects_stream_options=_mistral_rejection),
    "cerebras": Quirks(
        usage=_cached_only,
        extra={
            "time_info": {
                "queue_time": 0.0001,
                "prompt_time": 0.001,
                "completion_time": 0.01,
                "total_time": 0.012,
            }
        },
    ),
}
# Path prefixes the mock strips (`/<provider>/v1/…`): every OpenAI-compatible provider.
COMPATIBLE = frozenset({"openai", *_QUIRKS})


def quirks_for(provider: str) -> Quirks:
    return _QUIRKS.get(provider, _OPENAI)

"""Upper-bound cost of a request before it is sent (DESIGN.md §3).

Input: every byte of the request body counts as one token, at the dearest
input rate. A BPE token is at
least one UTF-8 byte, so this bounds the real input from above (JSON framing
included) without a tokenizer. Output: the request's own limit
(max_tokens / max_completion_tokens / max_output_tokens, or Gemini's
generationConfig.maxOutputTokens, which counts thinking tokens too), else the
model's catalog maximum."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dataplane.pricing import ModelPrice

OUTPUT_LIMIT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def _requested_limit(body: Mapping[str, Any]) -> int | None:
    config = body.get("generationConfig")
    gemini = config.get("maxOutputTokens") if isinstance(config, Mapping) else None
    for value in (*(body.get(name) for name in OUTPUT_LIMIT_FIELDS), gemini):
        if type(value) is int and value >= 0:
            return value
    return None


def output_limit(body: Mapping[str, Any], price: ModelPrice) -> int:
    value = _requested_limit(body)
    if value is None:
        return price.max_output_tokens
    return min(value, price.max_output_tokens) if price.max_output_tokens else value


def candidates(body: Mapping[str, Any]) -> int:
    """How many answers the output limit applies to (Gemini's candidateCount)."""
    config = body.get("generationConfig")
    value = config.get("candidateCount") if isinstance(config, Mapping) else None
    return value if type(value) is int and value > 1 else 1


def upper_bound_micros(body_bytes: int, body: Mapping[str, Any], price: ModelPrice) -> int:
    # Any input token may turn out to be a cache write, the dearest input kind.
    input_rate = max(price.input_micros_per_mtok, price.cache_write_micros_per_mtok or 0)
    output = output_limit(body, price) * candidates(body)
    total = body_bytes * input_rate + output * price.output_micros_per_mtok
    return -(-total // 1_000_000)

"""Upper-bound cost of a request before it is sent (DESIGN.md §3).

Input: every byte of the request body counts as one token, at the dearest
input rate. A BPE token is at
least one UTF-8 byte, so this bounds the real input from above (JSON framing
included) without a tokenizer. Output: the request's own limit
(max_tokens / max_completion_tokens / max_output_tokens, or Gemini's
generationConfig.maxOutputTokens, which counts thinking tokens too), else the
model's catalog maximum."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dataplane.errors import UnknownModel
from dataplane.inbound import RequestView
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


def tokens(view: RequestView, price: ModelPrice, limits: Limits) -> int:
    """The token APIs' estimate (chat, completions, responses, messages, Gemini)."""
    return upper_bound_micros(view.raw_len, view.body, price)


def upper_bound_micros(body_bytes: int, body: Mapping[str, Any], price: ModelPrice) -> int:
    # Any input token may turn out to be a cache write, the dearest input kind.
    input_rate = max(price.input_micros_per_mtok, price.cache_write_micros_per_mtok or 0)
    output = output_limit(body, price) * candidates(body)
    total = body_bytes * input_rate + output * price.output_micros_per_mtok
    return -(-total // 1_000_000)


# --- non-token APIs --------------------------------------------------------------------------
#
# Speech and images: the request names what is billed (characters of the text, n images), so
# the estimate is exact. Audio in: the duration is unknown until the provider answers. An
# uploaded file bounds it: no speech codec the providers accept encodes a second in fewer than
# MIN_AUDIO_BYTES_PER_SECOND bytes (4 kbit/s; AMR-NB's lowest mode is 4.75, Opus's 6). Audio
# the provider fetches itself (Deepgram's `{"url": …}`) is bounded by the operator's
# `max_audio_seconds` (SPENDGATE_MAX_AUDIO_SECONDS, default one hour), a per-request maximum:
# a longer recording is still billed in full at settlement, beyond its reservation.

MIN_AUDIO_BYTES_PER_SECOND = 500
# Generous audio tokens per second of input (OpenAI's transcription models use ~17).
AUDIO_TOKENS_PER_SECOND = 50
# Speech rarely runs slower than 5 characters a second: ~4 audio tokens per character at 21/s.
SPEECH_TOKENS_PER_CHAR_BOUND = 4


@dataclass(frozen=True)
class Limits:
    max_audio_seconds: int = 3600
    max_referenced_input_tokens: int = 1_048_576
    strict: bool = False  # the key admits only what fits whole: refuse what cannot be bounded


Estimator = Callable[[RequestView, ModelPrice, Limits], int]


def _ceil(per_million: int) -> int:
    return -(-per_million // 1_000_000)


def _required(price: ModelPrice, rate: int | None, unit: str) -> int:
    if rate is None:  # Settle would refuse the unit: refuse the request now, before any cost
        raise UnknownModel(f"The model `{price.model}` has no catalog price for {unit}.", param="model")
    return rate


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _audio_seconds(view: RequestView, limits: Limits) -> int:
    if view.upload_bytes:
        return -(-view.upload_bytes // MIN_AUDIO_BYTES_PER_SECOND)
    return limits.max_audio_seconds


def text_to_speech(field: str) -> Estimator:
    """ElevenLabs (`text`) and OpenAI speech (`input`)."""

    def estimate(view: RequestView, price: ModelPrice, limits: Limits) -> int:
        text = _text(view.body.get(field))
        if price.characters_micros_per_mchar is not None or price.provider == "elevenlabs":
            return _ceil(len(text) * _required(price, price.characters_micros_per_mchar, "characters"))
        audio_rate = price.audio_output_micros_per_mtok or price.output_micros_per_mtok
        prompt = len(text.encode()) + len(_text(view.body.get("instructions")).encode())
        return _ceil(
            prompt * price.input_micros_per_mtok + len(text) * SPEECH_TOKENS_PER_CHAR_BOUND * audio_rate
        )

    return estimate


def speech_to_text(view: RequestView, price: ModelPrice, limits: Limits) -> int:
    """Deepgram listen and OpenAI transcriptions: by audio time, or by audio tokens."""
    seconds = _audio_seconds(view, limits)
    # Required even of token-billed models: an answer without usage is billed by estimated time.
    by_time = _ceil(seconds * _required(price, price.audio_seconds_micros_per_msec, "audio seconds"))
    by_tokens = 0
    if price.audio_input_micros_per_mtok is not None:
        prompt = sum(len(v.encode()) for v in view.body.values() if isinstance(v, str))
        by_tokens = _ceil(
            seconds * AUDIO_TOKENS_PER_SECOND * price.audio_input_micros_per_mtok
            + prompt * price.input_micros_per_mtok
            + price.max_output_tokens * price.output_micros_per_mtok
        )
    return max(by_time, by_tokens)


def images(view: RequestView, price: ModelPrice, limits: Limits) -> int:
    n = view.body.get("n")
    count = n if type(n) is int and n > 0 else 1
    if price.images_micros_per_mimage is not None:
        return _ceil(count * price.images_micros_per_mimage)
    partial = view.body.get("partial_images")
    per_request = count * (1 + (partial if type(partial) is int and partial > 0 else 0))
    prompt = len(_text(view.body.get("prompt")).encode())
    return _ceil(
        prompt * price.input_micros_per_mtok
        + per_request * price.max_output_tokens * price.output_micros_per_mtok
    )

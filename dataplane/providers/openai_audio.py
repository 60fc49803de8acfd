"""OpenAI's audio endpoints: `/v1/audio/speech` and `/v1/audio/transcriptions`.

Speech. The answer is audio bytes, or with `stream_format: "sse"` events
ending in `speech.audio.done` with `usage{input_tokens, output_tokens}`. A
model whose catalog row prices characters (tts-1, tts-1-hd) is billed per
character of `input`, exactly as OpenAI bills it. Otherwise (gpt-4o-mini-tts)
the bill is tokens: text in at the input rate, audio out at the audio-output
rate, from `speech.audio.done` when the client streams SSE. A binary answer
reports nothing, so it is billed as an estimate, flagged: input tokens at most
the UTF-8 bytes of `input` and `instructions`, and `SPEECH_TOKENS_PER_CHAR`
audio tokens per character of `input` (OpenAI quotes ~$0.015 a minute at $12
per million audio tokens, about 21 tokens a second; speech runs 10–15
characters a second). Clients who want exact bills stream SSE.

Transcriptions (multipart in; JSON, text or SSE out). `usage` is either
`{type: "tokens", input_tokens, input_token_details{audio_tokens, text_tokens},
output_tokens}` (audio tokens billed at the audio-input rate, the rest of the
input at the input rate) or `{type: "duration", seconds}` (audio time). A
`verbose_json` answer without usage has `duration`. When none of these is
there (whisper-1's `json`, or `text`/`srt`/`vtt`), the duration is estimated
from the uploaded file's size at `TYPICAL_AUDIO_BYTES_PER_SECOND` and flagged.
Every transcription model's catalog row prices audio seconds for that reason."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Any

from dataplane.providers.jsonbody import JsonBody, as_obj, count, loads, utf8_len
from dataplane.providers.sse import SSESplitter
from dataplane.providers.usage import ParseContext, Usage

__all__ = [
    "SPEECH_TOKENS_PER_CHAR",
    "TYPICAL_AUDIO_BYTES_PER_SECOND",
    "SpeechParser",
    "TranscriptionParser",
    "is_sse",
]

SPEECH_TOKENS_PER_CHAR = 2
# 32 kbit/s: telephone-quality MP3/Opus speech. Used only to estimate a transcription whose
# answer reports no duration; richer encodings are over-billed, never under by much.
TYPICAL_AUDIO_BYTES_PER_SECOND = 4_000


def is_sse(context: ParseContext) -> bool:
    return context.headers.get("content-type", "").lower().startswith("text/event-stream")


def _ms(seconds: object) -> int | None:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds != seconds:
        return None
    value = Decimal(repr(seconds)) * 1000  # the JSON literal, not its binary float
    return count(int(value.to_integral_value(rounding=ROUND_CEILING))) if value.is_finite() else None


class _Events:
    """Bytes through untouched; JSON `data:` of SSE events, or the whole body, kept for `close`."""

    def __init__(self, context: ParseContext) -> None:
        self.context = context
        self.sse = is_sse(context)
        self._splitter = SSESplitter()
        self._body = JsonBody()
        self.events: list[dict[str, Any]] = []
        self.delivered = 0

    def feed(self, data: bytes) -> bytes:
        self.delivered += len(data)
        if not self.sse:
            self._body.feed(data)
            return data
        for event in self._splitter.feed(data):
            self._on(event.data if not event.overflow else "")
        return data

    def flush(self) -> bytes:
        event = self._splitter.flush_event() if self.sse else None
        if event is not None and not event.overflow:
            self._on(event.data)
        return b""

    def _on(self, data: str) -> None:
        chunk = loads(data) if data else None
        if isinstance(chunk, dict) and "usage" in chunk:  # only the terminal events carry usage
            self.events.append(chunk)

    def body(self) -> dict[str, Any] | None:
        return self._body.value() if not self.sse else None

    def usage(self) -> dict[str, Any] | None:
        holder = self.events[-1] if self.sse and self.events else self.body()
        usage = (holder or {}).get("usage")
        return usage if isinstance(usage, dict) else None


class SpeechParser(_Events):
    def close(self) -> Usage:
        self.flush()
        request = self.context.request
        text = request.get("input")
        if "characters" in self.context.priced_units:
            return Usage(characters=len(text) if isinstance(text, str) else 0, complete=True)
        usage = self.usage()
        if usage is not None and count(usage.get("output_tokens")) is not None:
            return Usage(
                input_tokens=count(usage.get("input_tokens")) or 0,
                output_tokens=0,
                audio_output_tokens=count(usage.get("output_tokens")),
                complete=True,
            )
        characters = len(text) if isinstance(text, str) else 0
        return Usage(
            input_tokens=utf8_len(text) + utf8_len(request.get("instructions")),
            output_tokens=0,
            audio_output_tokens=characters * SPEECH_TOKENS_PER_CHAR,
            estimated=True,
            complete=self.delivered > 0,
        )


class TranscriptionParser(_Events):
    def close(self) -> Usage:
        self.flush()
        usage = self.usage() or {}
        if usage.get("type") == "tokens" and count(usage.get("output_tokens")) is not None:
            details = as_obj(usage.get("input_token_details"))
            audio = count(details.get("audio_tokens")) or 0
            inputs = count(usage.get("input_tokens")) or 0
            text = count(details.get("text_tokens"))
            return Usage(
                input_tokens=text if text is not None else max(inputs - audio, 0),
                output_tokens=count(usage.get("output_tokens")),
                audio_input_tokens=audio,
                complete=True,
            )
        if usage.get("type") == "duration" and _ms(usage.get("seconds")) is not None:
            return Usage(audio_ms=_ms(usage.get("seconds")), complete=True)
        verbose = _ms((self.body() or {}).get("duration"))
        if verbose is not None:
            return Usage(audio_ms=verbose, complete=True)
        guess = -(-self.context.upload_bytes * 1000 // TYPICAL_AUDIO_BYTES_PER_SECOND)
        return Usage(audio_ms=guess, estimated=True, complete=self.delivered > 0)

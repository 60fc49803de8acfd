"""ElevenLabs text-to-speech: `POST /v1/text-to-speech/{voice_id}`, `…/stream`,
`…/with-timestamps` and `…/stream/with-timestamps`.

The answer is audio (raw bytes, chunked for `/stream`) or, for the timestamp
variants, JSON with base64 audio: it carries no usage, and the bytes pass
through untouched. What ElevenLabs charged comes in the `character-cost`
response header, in its billing unit: credits, one per character of `text`
on the Multilingual and v3 models and half a credit on Flash and Turbo. The
gateway bills that number as `characters`, priced per million of them, so a
catalog row's `characters_micros_per_mchar` is the price of a million
credits on that model. Without the header the gateway bills `len(text)`, one
per character, flagged estimated (an upper bound on every model)."""

from __future__ import annotations

from dataplane.errors import GatewayError
from dataplane.providers.usage import ParseContext, Usage

__all__ = ["DEFAULT_MODEL", "SpeechParser", "text_characters"]

# What ElevenLabs uses when `model_id` is absent.
DEFAULT_MODEL = "eleven_multilingual_v2"


def text_characters(text: object) -> int:
    """Characters of the request's `text` (code points, as ElevenLabs counts them)."""
    return len(text) if isinstance(text, str) else 0


class SpeechParser:
    """Forwards the audio untouched; bills from the response headers or the request."""

    def __init__(self, context: ParseContext) -> None:
        self._context = context
        self._delivered = 0

    def feed(self, data: bytes) -> bytes:
        self._delivered += len(data)
        return data

    def flush(self) -> bytes:
        return b""

    def close(self) -> Usage:
        cost = self._context.headers.get("character-cost", "").strip()
        if cost.isdigit() and cost.isascii():
            return Usage(characters=int(cost), complete=True)
        text = text_characters(self._context.request.get("text"))
        return Usage(characters=text, estimated=True, complete=self._delivered > 0)


# --- errors the gateway answers itself ------------------------------------------------------


def error_body(exc: GatewayError) -> dict[str, object]:
    """The SDK raises ApiError carrying this body."""
    return {"detail": {"status": exc.code or exc.openai_type, "message": exc.message}}

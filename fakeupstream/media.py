"""The fake upstream's non-token APIs: ElevenLabs text-to-speech, Deepgram
pre-recorded speech-to-text, and OpenAI speech, transcriptions and images
(those three in openai_media.py, dispatched from here).

Auth is each provider's own: ElevenLabs wants `xi-api-key` (else 401
`{"detail": {"status": "invalid_api_key", …}}`), Deepgram `Authorization:
Token <key>` (else 401 `{"err_code": "INVALID_AUTH", …}`), OpenAI a Bearer
token. `x-mock-status` answers in the provider's error shape — ElevenLabs
`{"detail": {"status", "message"}}`, Deepgram `{"err_code", "err_msg",
"request_id"}` — and the delay and abort knobs work as elsewhere (a chunked
audio stream counts its chunks as events).

Deterministic amounts, for tests to compute costs from:

* Speech audio is `AUDIO_BYTES_PER_CHAR` bytes per character of the text
  (`mock_audio`), sent whole, or in `STREAM_CHUNK_BYTES` chunks for
  ElevenLabs `/stream`. ElevenLabs' `character-cost` is `elevenlabs_cost`:
  one per character, half (rounded up) on Flash and Turbo models. OpenAI's
  `stream_format: "sse"` (gpt-4o-mini-tts only) ends in `speech.audio.done`
  with `usage{input_tokens: ceil(UTF-8 bytes of input / 4), output_tokens:
  one per character}`.
* Audio in lasts `len(audio) / AUDIO_BYTES_PER_SECOND` seconds; Deepgram's
  `{"url"}` body lasts `url_seconds(url)`. `multichannel=true` reports 2
  channels, `callback` an immediate `{"request_id"}` only.
* Transcriptions: whisper-1's `json` has no usage (its `verbose_json` has
  `duration`); gpt-4o(-mini)-transcribe report tokens: audio tokens
  `ceil(bytes / 1600)`, text tokens of `prompt`, output tokens = words of the
  transcript (16, or x-mock-output-tokens). `text`/`srt`/`vtt` are plain text.
* Images: DALL·E answers carry no usage; GPT Image answers report
  `output_tokens = n × IMAGE_TOKENS[size][quality]` ("auto" is 1024x1024 /
  medium) and the prompt's tokens as input."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import Callable
from urllib.parse import parse_qsl

from fakeupstream import openai_media as mock_openai_media
from fakeupstream.openai_media import (
    AUDIO_BYTES_PER_CHAR,
    AUDIO_BYTES_PER_SECOND,
    IMAGE_TOKENS,
    STREAM_CHUNK_BYTES,
    mock_audio,
)
from fakeupstream.wire import (
    DEFAULT_REPLY_TOKENS,
    Knobs,
    Reply,
    dumps,
    error_reply,
    json_reply,
    parse_knobs,
    reply_text,
    words,
)

__all__ = [
    "AUDIO_BYTES_PER_CHAR",
    "AUDIO_BYTES_PER_SECOND",
    "IMAGE_TOKENS",
    "STREAM_CHUNK_BYTES",
    "elevenlabs_cost",
    "mock_audio",
    "respond",
    "url_seconds",
]

_TTS = re.compile(r"^/v1/text-to-speech/([^/]+)(/stream)?(/with-timestamps)?$")
_MP3 = ("content-type", "audio/mpeg")
_JSON = ("content-type", "application/json")

Request = tuple[str, str, str, list[tuple[str, str]], bytes]  # method, path, query, headers, body


def elevenlabs_cost(model: str, text: str) -> int:
    cheap = model.startswith(("eleven_flash", "eleven_turbo"))
    return math.ceil(len(text) / 2) if cheap else len(text)


def url_seconds(url: str) -> float:
    return 10 + len(url) % 50 + 0.25


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next((v for k, v in headers if k == name), "")


# --- ElevenLabs --------------------------------------------------------------------------


def _el_error(status: int, kind: str, message: str, rid: str) -> Reply:
    body = {"detail": {"status": kind, "message": message}}
    return Reply(status, (_JSON, ("request-id", rid)), dumps(body))


def _elevenlabs(req: Request, match: re.Match[str], knobs: Knobs, rid: str) -> Reply:
    headers, raw = req[3], req[4]
    if not _header(headers, "xi-api-key").strip():
        return _el_error(401, "invalid_api_key", "Invalid API key", rid)
    if knobs.status is not None:
        return _el_error(knobs.status, "mock_error", f"Mock error {knobs.status} (x-mock-status).", rid)
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str):
        detail = [{"loc": ["body", "text"], "msg": "Field required", "type": "missing"}]
        return Reply(422, (_JSON,), dumps({"detail": detail}))
    model = body.get("model_id") if isinstance(body.get("model_id"), str) else "eleven_multilingual_v2"
    audio = mock_audio(text)
    head = (("character-cost", str(elevenlabs_cost(model, text))), ("request-id", rid))
    stream, timestamps = bool(match.group(2)), bool(match.group(3))
    chunks = [audio[i : i + STREAM_CHUNK_BYTES] for i in range(0, len(audio), STREAM_CHUNK_BYTES)] or [b""]
    if timestamps:
        pieces = [dumps({"audio_base64": base64.b64encode(c).decode(), "alignment": None}) for c in chunks]
        if stream:
            return Reply(200, (_JSON, *head), events=tuple(p + b"\n" for p in pieces))
        whole = {"audio_base64": base64.b64encode(audio).decode(), "alignment": None}
        return Reply(200, (_JSON, *head), dumps(whole))
    if stream:
        return Reply(200, (_MP3, *head), events=tuple(chunks))
    return Reply(200, (_MP3, *head), audio)


# --- Deepgram ----------------------------------------------------------------------------


def _dg_error(status: int, code: str, message: str, rid: str) -> Reply:
    return Reply(status, (_JSON,), dumps({"err_code": code, "err_msg": message, "request_id": rid}))


def _deepgram(req: Request, knobs: Knobs, rid: str) -> Reply:
    query, headers, raw = dict(parse_qsl(req[2], keep_blank_values=True)), req[3], req[4]
    scheme, _, key = _header(headers, "authorization").partition(" ")
    if scheme.lower() != "token" or not key.strip():
        return _dg_error(401, "INVALID_AUTH", "Invalid credentials.", rid)
    if knobs.status is not None:
        return _dg_error(knobs.status, "MOCK_ERROR", f"Mock error {knobs.status} (x-mock-status).", rid)
    request_id = str(uuid.UUID(hex=(rid + "0" * 32)[:32]))
    if _header(headers, "content-type").startswith("application/json"):
        try:
            url = json.loads(raw).get("url")
        except (ValueError, AttributeError):
            url = None
        if not isinstance(url, str) or not url:
            return _dg_error(400, "Bad Request", "Invalid JSON body: expected a `url`.", request_id)
        seconds = url_seconds(url)
    elif not raw:
        return _dg_error(400, "Bad Request", "No audio in the request body.", request_id)
    else:
        seconds = len(raw) / AUDIO_BYTES_PER_SECOND
    if "callback" in query:
        return json_reply({"request_id": request_id}, "openai", rid)
    n = knobs.output_tokens if knobs.output_tokens is not None else DEFAULT_REPLY_TOKENS
    channels = 2 if query.get("multichannel") == "true" else 1
    model = query.get("model", "base")
    model_id = hashlib.sha256(model.encode()).hexdigest()[:32]
    spoken = [w.strip() for w in words(n)]
    alternative = {
        "transcript": reply_text(n),
        "confidence": 0.99,
        "words": [
            {
                "word": w,
                "start": i * seconds / max(n, 1),
                "end": (i + 1) * seconds / max(n, 1),
                "confidence": 0.99,
            }
            for i, w in enumerate(spoken)
        ],
    }
    body = {
        "metadata": {
            "transaction_key": "deprecated",
            "request_id": request_id,
            "sha256": hashlib.sha256(raw).hexdigest(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "duration": seconds,
            "channels": channels,
            "models": [model_id],
            "model_info": {model_id: {"name": model, "version": "2026-01-01.0", "arch": model}},
        },
        "results": {"channels": [{"alternatives": [alternative]} for _ in range(channels)]},
    }
    return Reply(200, (_JSON, ("dg-request-id", request_id)), dumps(body))


def respond(req: Request, path: str, rid: str) -> tuple[Reply, Knobs] | None:
    """The reply to a request for one of these APIs, or None when the path is not theirs."""
    method = req[0]
    tts = _TTS.match(path)
    handler: Callable[[Knobs], Reply]
    if method == "POST" and tts is not None:
        handler = lambda k: _elevenlabs(req, tts, k, rid)  # noqa: E731
    elif method == "POST" and path == "/v1/listen":
        handler = lambda k: _deepgram(req, k, rid)  # noqa: E731
    elif method == "POST" and path in mock_openai_media.PATHS:
        handler = lambda k: mock_openai_media.respond(path, req[3], req[4], k, rid)  # noqa: E731
    else:
        return None
    try:
        knobs = parse_knobs(req[3])
    except ValueError as exc:
        return error_reply("openai", 400, str(exc), rid), Knobs()
    return handler(knobs), knobs

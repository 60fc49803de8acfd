"""The fake upstream's OpenAI audio and image routes: POST /v1/audio/speech,
/v1/audio/transcriptions (multipart) and /v1/images/generations, behind a
Bearer token. Their deterministic amounts are listed in media.py."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import json
import math
import time
from typing import Any

from fakeupstream.wire import (
    DEFAULT_REPLY_TOKENS,
    BadRequest,
    Knobs,
    Reply,
    error_reply,
    json_reply,
    reply_text,
    sse_data,
    sse_reply,
    tokens,
    words,
)

__all__ = ["IMAGE_TOKENS", "PATHS", "respond"]

PATHS = ("/v1/audio/speech", "/v1/audio/transcriptions", "/v1/images/generations")
AUDIO_BYTES_PER_CHAR = 64
STREAM_CHUNK_BYTES = 1024
AUDIO_BYTES_PER_SECOND = 16_000
IMAGE_TOKENS = {
    "1024x1024": {"low": 272, "medium": 1056, "high": 4160},
    "1024x1536": {"low": 408, "medium": 1584, "high": 6240},
    "1536x1024": {"low": 408, "medium": 1584, "high": 6240},
}
_MP3 = ("content-type", "audio/mpeg")


def mock_audio(text: str) -> bytes:
    """`AUDIO_BYTES_PER_CHAR` bytes a character, derived from the text."""
    seed = hashlib.sha256(text.encode()).digest()
    size = AUDIO_BYTES_PER_CHAR * len(text)
    return (seed * (size // len(seed) + 1))[:size]


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next((v for k, v in headers if k == name), "")


def _speech(body: dict[str, Any], knobs: Knobs, rid: str) -> Reply:
    model, text = body.get("model"), body.get("input")
    if not isinstance(model, str) or not isinstance(text, str) or not isinstance(body.get("voice"), str):
        raise BadRequest("Missing required parameter: 'model', 'input' or 'voice'.", "input")
    audio = mock_audio(text)
    if body.get("stream_format") == "sse":
        if model in ("tts-1", "tts-1-hd"):
            raise BadRequest(f"stream_format 'sse' is not supported for {model}.", "stream_format")
        deltas = [audio[i : i + STREAM_CHUNK_BYTES] for i in range(0, len(audio), STREAM_CHUNK_BYTES)]
        events = [
            sse_data({"type": "speech.audio.delta", "audio": base64.b64encode(d).decode()}) for d in deltas
        ]
        prompt = tokens(len(text.encode()))
        usage = {"input_tokens": prompt, "output_tokens": len(text), "total_tokens": prompt + len(text)}
        events.append(sse_data({"type": "speech.audio.done", "usage": usage}))
        return sse_reply(events, "openai", rid, knobs)
    return Reply(200, (_MP3, ("x-request-id", f"req_{rid}")), audio)


def _form(raw: bytes, content_type: str) -> tuple[dict[str, str], bytes]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
    )
    fields: dict[str, str] = {}
    audio = b""
    for part in message.iter_parts() if message.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        payload = payload if isinstance(payload, bytes) else b""
        if part.get_filename() is not None:
            audio = payload
        elif isinstance(name, str):
            fields[name] = payload.decode("utf-8", "replace")
    return fields, audio


def _transcription(fields: dict[str, str], audio: bytes, knobs: Knobs, rid: str) -> Reply:
    model = fields.get("model")
    if not model or not audio:
        raise BadRequest("Missing required parameter: 'model' or 'file'.", "file")
    n = knobs.output_tokens if knobs.output_tokens is not None else DEFAULT_REPLY_TOKENS
    text, seconds = reply_text(n), len(audio) / AUDIO_BYTES_PER_SECOND
    fmt = fields.get("response_format", "json")
    audio_tokens, prompt = math.ceil(len(audio) / 1600), tokens(len(fields.get("prompt", "").encode()))
    usage = {
        "type": "tokens",
        "input_tokens": audio_tokens + prompt,
        "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": prompt},
        "output_tokens": n,
        "total_tokens": audio_tokens + prompt + n,
    }
    by_tokens = model != "whisper-1"
    if fields.get("stream") == "true" and by_tokens:
        events = [sse_data({"type": "transcript.text.delta", "delta": w}) for w in words(n)]
        events.append(sse_data({"type": "transcript.text.done", "text": text, "usage": usage}))
        return sse_reply(events, "openai", rid, knobs)
    if fmt in ("text", "srt", "vtt"):
        return Reply(200, (("content-type", "text/plain; charset=utf-8"),), text.encode() + b"\n")
    if fmt == "verbose_json" and not by_tokens:
        verbose = {
            "task": "transcribe",
            "language": "english",
            "duration": seconds,
            "text": text,
            "segments": [],
        }
        return json_reply(verbose, "openai", rid)
    return json_reply({"text": text, "usage": usage} if by_tokens else {"text": text}, "openai", rid)


def _images(body: dict[str, Any], knobs: Knobs, rid: str) -> Reply:
    model = str(body.get("model") or "dall-e-2")
    prompt, n = body.get("prompt"), body.get("n", 1)
    if not isinstance(prompt, str) or type(n) is not int or n < 1:
        raise BadRequest("Missing required parameter: 'prompt'.", "prompt")
    picture = base64.b64encode(hashlib.sha256(prompt.encode()).digest() * 2).decode()
    created = int(time.time())
    if not model.startswith("gpt-image"):
        data = [{"url": f"https://mock.invalid/{rid}/{i}.png", "revised_prompt": prompt} for i in range(n)]
        return json_reply({"created": created, "data": data}, "openai", rid)
    size = str(body.get("size")) if body.get("size") in IMAGE_TOKENS else "1024x1024"
    quality = str(body.get("quality")) if body.get("quality") in ("low", "medium", "high") else "medium"
    prompt_tokens = tokens(len(prompt.encode()))
    output = n * IMAGE_TOKENS[size][quality]
    usage = {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"text_tokens": prompt_tokens, "image_tokens": 0},
        "output_tokens": output,
        "total_tokens": prompt_tokens + output,
    }
    if body.get("stream") is True:
        events = [
            sse_data(
                {"type": "image_generation.partial_image", "b64_json": picture, "partial_image_index": i}
            )
            for i in range(body.get("partial_images", 0) if type(body.get("partial_images")) is int else 0)
        ]
        events.append(sse_data({"type": "image_generation.completed", "b64_json": picture, "usage": usage}))
        return sse_reply(events, "openai", rid, knobs)
    reply = {
        "created": created,
        "data": [{"b64_json": picture} for _ in range(n)],
        "background": "opaque",
        "output_format": "png",
        "quality": quality,
        "size": size,
        "usage": usage,
    }
    return json_reply(reply, "openai", rid)


def respond(path: str, headers: list[tuple[str, str]], raw: bytes, knobs: Knobs, rid: str) -> Reply:
    bearer = _header(headers, "authorization")
    if bearer[:7].lower() != "bearer " or not bearer[7:].strip():
        message = "You didn't provide an API key. Provide it in an Authorization header using Bearer auth."
        return error_reply("openai", 401, message, rid)
    if knobs.status is not None:
        return error_reply("openai", knobs.status, f"Mock error {knobs.status} (x-mock-status).", rid)
    try:
        if path == "/v1/audio/transcriptions":
            return _transcription(*_form(raw, _header(headers, "content-type")), knobs, rid)
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return error_reply("openai", 400, f"The request body is not valid JSON: {exc}", rid)
        if not isinstance(body, dict):
            return error_reply("openai", 400, "The request body must be a JSON object.", rid)
        return (_speech if path == "/v1/audio/speech" else _images)(body, knobs, rid)
    except BadRequest as exc:
        return error_reply("openai", 400, str(exc), rid, param=exc.param)

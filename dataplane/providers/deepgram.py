"""Deepgram pre-recorded speech-to-text: `POST /v1/listen`.

The body is the audio itself, or JSON `{"url": …}` for audio Deepgram fetches;
the model is the `model` query parameter (Deepgram's documented default when
absent is `base-general`, i.e. the `base` tier). Billing is per second of
audio: the response's `metadata.duration` (seconds, a decimal) becomes whole
milliseconds, rounded up. With `multichannel=true` each channel is billed
(duration × `metadata.channels`; per-channel billing is what third-party
Deepgram pricing notes say, not an official page).

With `callback` set, Deepgram answers at once with only a `request_id` and
posts the transcript to the callback later; the gateway never sees that, so
such a request would be free. The gateway refuses callbacks (`refuse_callback`,
a Deepgram-shaped 400) unless the operator allows them with
SPENDGATE_DEEPGRAM_CALLBACKS=on, in which case they are forwarded and settle
at 0: metering the callback itself is not built.

Model names are `tier` or `tier-option` (`nova-2-phonecall`, `base-general`):
an option is priced at its tier's rate unless the catalog has a row for it,
and Nova-3 with `language=multi` is the `nova-3:multilingual` row when the
catalog has one."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

from dataplane.config import Settings
from dataplane.errors import BadRequest, GatewayError
from dataplane.inbound import RequestView
from dataplane.providers.jsonbody import MAX_BODY_BYTES, count
from dataplane.providers.usage import ParseContext, Usage

__all__ = ["DEFAULT_MODEL", "ListenParser", "model_candidates", "refuse_callback"]

DEFAULT_MODEL = "base"
_METADATA = re.compile(rb'"metadata"\s*:\s*\{')


def refuse_callback(view: RequestView, settings: Settings) -> None:
    """A callback request would never be billed (see above): refused unless the operator allows it."""
    if "callback" in view.query and not settings.deepgram_callbacks:
        raise BadRequest(
            "This gateway does not accept `callback` requests: their usage cannot be metered. "
            "Send the request without `callback` and read the transcript from the response.",
            param="callback",
        )


def model_candidates(model: str, query: Mapping[str, str]) -> tuple[str, ...]:
    """Catalog names to try for a `model` query value, most specific first."""
    names = [model]
    head, _, option = model.rpartition("-")
    if head and not option.isdigit():  # "nova-2-phonecall" → "nova-2"; "nova-2" stays itself
        names.append(head)
    if str(query.get("language", "")).lower() == "multi":
        names = [f"{name}:multilingual" for name in names] + names
    return tuple(names)


def _decimal_loads(text: bytes) -> object:
    try:
        return json.loads(text, parse_float=Decimal)
    except (ValueError, RecursionError):
        return None


def _metadata_from_head(head: bytes) -> dict[str, Any] | None:
    found = _METADATA.search(head)
    if found is None:
        return None
    decoder = json.JSONDecoder(parse_float=Decimal)
    try:
        value, _ = decoder.raw_decode(head[found.end() - 1 :].decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _milliseconds(seconds: object) -> int | None:
    if isinstance(seconds, bool) or not isinstance(seconds, Decimal | int):
        return None
    try:
        ms = (Decimal(seconds) * 1000).to_integral_value(rounding=ROUND_CEILING)
    except InvalidOperation:
        return None
    return count(int(ms)) if ms.is_finite() else None


class ListenParser:
    """Forwards the JSON reply untouched; reads `metadata` at the end: from the whole
    body when it is at most MAX_BODY_BYTES, else from the head kept (Deepgram sends
    `metadata` first)."""

    def __init__(self, context: ParseContext) -> None:
        self._context = context
        self._buf = bytearray()
        self._size = 0

    def feed(self, data: bytes) -> bytes:
        self._size += len(data)
        if len(self._buf) < MAX_BODY_BYTES:  # past that, the head holds `metadata`, the first key
            self._buf += data
        return data

    def flush(self) -> bytes:
        return b""

    def close(self) -> Usage:
        if "callback" in self._context.query:
            return Usage(complete=True)  # the transcript goes to the callback: nothing to meter here
        body = _decimal_loads(bytes(self._buf)) if self._size <= MAX_BODY_BYTES else None
        metadata = body.get("metadata") if isinstance(body, dict) else _metadata_from_head(bytes(self._buf))
        if not isinstance(metadata, dict):
            return Usage()
        ms = _milliseconds(metadata.get("duration"))
        if ms is None:
            return Usage()
        channels = count(metadata.get("channels"))
        if str(self._context.query.get("multichannel", "")).lower() == "true" and channels:
            ms *= channels
        return Usage(audio_ms=ms, complete=isinstance(body, dict))


# --- errors the gateway answers itself ------------------------------------------------------


def error_body(exc: GatewayError) -> dict[str, object]:
    """The SDK raises ApiError carrying this body."""
    return {"err_code": exc.deepgram_code, "err_msg": exc.message, "request_id": str(uuid.uuid4())}

"""Find the gateway key in whatever header the client's SDK uses."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from starlette.requests import Request

from dataplane.errors import Unauthorized
from dataplane.keycache import KeyState, digest
from dataplane.requestid import REFUSAL


class Keys(Protocol):
    """Where a worker finds a key by its secret's digest (keycache.KeyCache, or a test's table)."""

    async def get(self, secret_sha256: bytes) -> KeyState | None: ...


KEY_HEADERS = ("x-api-key", "xi-api-key", "x-goog-api-key")
# A spendgate secret is `sg_live_` and 43 URL-safe base64 characters; this leaves room to spare.
MAX_SECRET_CHARS = 256


def plausible_secret(secret: str) -> bool:
    """Whether `secret` could be a key at all: printable ASCII without spaces, of a key's length.

    Anything else is refused as an incorrect key without asking the control plane: a
    non-ASCII value cannot travel as gRPC metadata, and one of many kilobytes exceeds
    gRPC's metadata limit (the key API would answer 500 or 503, not 401)."""
    return len(secret) <= MAX_SECRET_CHARS and secret.isascii() and secret.isprintable() and " " not in secret


def presented_key(request: Request) -> str | None:
    """`Authorization: Bearer|Token`, `x-api-key`, `xi-api-key`, `x-goog-api-key`, or `?key=`."""
    authorization = request.headers.get("authorization", "")
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() in ("bearer", "token") and credential.strip():
        return credential.strip()
    for header in KEY_HEADERS:
        value = request.headers.get(header, "").strip()
        if value:
            return value
    return request.query_params.get("key") or None


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


async def authenticate(request: Request, keys: Keys, now_ms: Callable[[], int] = wall_clock_ms) -> KeyState:
    secret = presented_key(request)
    if secret is None:
        raise Unauthorized("No API key provided. Send your spendgate key as the SDK's API key.")
    if not plausible_secret(secret):
        raise Unauthorized("Incorrect API key provided.")
    state = await keys.get(digest(secret))
    if state is None:
        raise Unauthorized("Incorrect API key provided.")
    refusal = state.refusal(now_ms())  # revoked, expired, or a rotated-out secret past its grace
    if refusal is not None:
        reason, message = refusal
        request.scope[REFUSAL] = reason  # counted as the ledger's refusal would be (metrics.py)
        raise Unauthorized(message)
    return state

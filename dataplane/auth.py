"""Find the gateway key in whatever header the client's SDK uses."""

from __future__ import annotations

from typing import Protocol

from starlette.requests import Request

from dataplane.errors import Unauthorized
from dataplane.keycache import KeyState, digest


class Keys(Protocol):
    """Where a worker finds a key by its secret's digest (keycache.KeyCache, or a test's table)."""

    async def get(self, secret_sha256: bytes) -> KeyState | None: ...


KEY_HEADERS = ("x-api-key", "xi-api-key", "x-goog-api-key")


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


async def authenticate(request: Request, keys: Keys) -> KeyState:
    secret = presented_key(request)
    if secret is None:
        raise Unauthorized("No API key provided. Send your spendgate key as the SDK's API key.")
    state = await keys.get(digest(secret))
    if state is None:
        raise Unauthorized("Incorrect API key provided.")
    if state.revoked:
        raise Unauthorized("This API key has been revoked.")
    return state

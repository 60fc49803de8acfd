"""Key secrets: 256 random bits, shown once, stored as SHA-256.

A plain SHA-256 is the right hash here: the input is a uniformly random
256-bit value, so there is nothing for a slow password hash to protect."""

from __future__ import annotations

import hashlib
import hmac
import secrets

SECRET_PREFIX = "sg_live_"
DISPLAY_CHARS = len(SECRET_PREFIX) + 4


def mint_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def same_digest(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def same_token(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode(), expected.encode())


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"

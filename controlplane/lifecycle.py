"""A key's lifecycle besides its cap: when it expires, how its secret is rotated, and the
metadata an app tags it with. Checks only; the store applies them (keystore.py).

Expiry is a point in time, not a state anyone has to write: a key whose `expires_ms` has
passed is refused by every reader that compares it with its own clock (the data plane's
cache on each request, the ledger on each reservation, the control plane's
authenticator), so it takes effect at that instant everywhere, with no change to push.

Rotation keeps the row (id, cap, spend, period, metadata) and swaps the secret's digest.
The replaced digest stays in `old_secret_sha256` until `old_secret_expires_ms` (the grace
period), so clients can move to the new secret without downtime. One slot only: a second
rotation inside the grace period replaces the oldest secret, so at most two ever work."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from controlplane.errors import InvalidArgument
from controlplane.records import Key
from spendgate.times import MAX_MS
from spendgate.times import iso_utc as iso

MAX_METADATA_ENTRIES = 64
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
# Plain identifiers, so that `group_by=metadata.<key>` is unambiguous in a URL.
METADATA_KEY = re.compile(r"[A-Za-z0-9_.:-]+")
GROUP_BY_METADATA = "metadata."

HOUR_MS = 60 * 60 * 1000
DEFAULT_GRACE_MS = 24 * HOUR_MS
MAX_GRACE_MS = 30 * 24 * HOUR_MS


@dataclass(frozen=True)
class SecretMatch:
    """The key a presented secret's digest belongs to. `secret_expires_ms` is set when the
    secret is one a rotation replaced: it stops (or stopped) working then."""

    key: Key
    secret_expires_ms: int | None = None

    def refusal(self, now_ms: int) -> str | None:
        """Why this secret may not be used now, for people; None when it may."""
        if self.key.revoked:
            return "this key has been revoked"
        if self.secret_expires_ms is not None and now_ms >= self.secret_expires_ms:
            return (
                f"this secret was replaced by a rotation and stopped working at {iso(self.secret_expires_ms)}"
            )
        if self.key.expires_ms is not None and now_ms >= self.key.expires_ms:
            return f"this key expired at {iso(self.key.expires_ms)}"
        return None


def check_metadata(metadata: Mapping[str, str], field: str = "metadata") -> dict[str, str]:
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise InvalidArgument(field, f"at most {MAX_METADATA_ENTRIES} entries")
    for name, value in metadata.items():
        if not METADATA_KEY.fullmatch(name) or len(name) > MAX_METADATA_KEY:
            raise InvalidArgument(
                field, f"key {name[:80]!r}: 1 to {MAX_METADATA_KEY} characters of A-Z a-z 0-9 _ . : -"
            )
        if len(value) > MAX_METADATA_VALUE:
            raise InvalidArgument(field, f"value of {name!r}: at most {MAX_METADATA_VALUE} characters")
    return dict(sorted(metadata.items()))


def check_expiry(expires_ms: int | None, now_ms: int, field: str = "expires_ms") -> int | None:
    """A new expiry must be in the future: ending a key now is what revoking is for."""
    if expires_ms is None:
        return None
    if expires_ms <= now_ms:
        raise InvalidArgument(field, f"must be in the future (it is {iso(now_ms)} now)")
    if expires_ms > MAX_MS:
        raise InvalidArgument(field, f"must be at most {MAX_MS} ({iso(MAX_MS)})")
    return expires_ms


def check_grace(grace_ms: int | None, field: str = "grace_ms") -> int:
    if grace_ms is None:
        return DEFAULT_GRACE_MS
    if not 0 <= grace_ms <= MAX_GRACE_MS:
        raise InvalidArgument(field, f"must be from 0 to {MAX_GRACE_MS} ms (30 days)")
    return grace_ms


def group_by_metadata(group_by: str, field: str = "group_by") -> str | None:
    """The metadata key a `group_by` names (`metadata.user_id` → `user_id`); None for none."""
    if not group_by:
        return None
    name = group_by.removeprefix(GROUP_BY_METADATA)
    if name == group_by or not METADATA_KEY.fullmatch(name) or len(name) > MAX_METADATA_KEY:
        raise InvalidArgument(field, "must be metadata.<key>, e.g. metadata.user_id")
    return name

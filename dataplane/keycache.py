"""Per-worker key cache: SHA-256 of the presented secret → key state.

A miss asks the control plane (LookupKey); unknown secrets are remembered
briefly so a flood of bad keys does not become a flood of lookups. The
WatchKeys stream pushes revocations and cap changes into the cache as they
happen; entries also expire after a TTL, the fallback if the stream is down.
The stream resumes from the last sequence number it saw after a reconnect.

Expiry needs no push: a state carries the key's `expires_ms` (and, for a secret a
rotation replaced, when that secret stops), and every request compares them with
the clock (KeyState.refusal), so a key stops at its instant on every worker. A
change names the key's current and previous secret; any other secret cached for
the key is dropped, so a second rotation ends the oldest secret at once."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from dataplane.errors import ControlPlaneUnavailable
from dataplane.ratelimit import Limits
from spendgate.times import iso_utc
from spendgate.v1 import keys_pb2, keys_pb2_grpc

log = logging.getLogger(__name__)

NEGATIVE_TTL_SECONDS = 2.0


@dataclass(frozen=True)
class KeyState:
    id: str
    account_id: str
    name: str
    master: bool
    revoked: bool
    allowed_models: frozenset[str]
    cap_micros: int | None
    strict: bool = False  # admit only requests whose whole estimate fits
    limits: Limits | None = None  # rate limits (ratelimit.py); None: none, and no cost
    expires_ms: int | None = None  # the key's expiry
    secret_expires_ms: int | None = None  # set for a secret a rotation replaced: when it stops

    def refusal(self, now_ms: int) -> tuple[str, str] | None:
        """Why this key (by this secret) may not be used at `now_ms`: the reason as the
        metrics count it (a rotated-out secret is just no longer a credential) and the
        message for the caller; None if it may."""
        if self.revoked:
            return "key_revoked", "This API key has been revoked."
        if self.secret_expires_ms is not None and now_ms >= self.secret_expires_ms:
            return "unauthorized", (
                "This API key was rotated: this secret stopped working at "
                f"{iso_utc(self.secret_expires_ms)}. Use the key's new secret."
            )
        if self.expires_ms is not None and now_ms >= self.expires_ms:
            return "key_expired", f"This API key expired at {iso_utc(self.expires_ms)}."
        return None

    @classmethod
    def from_pb(cls, key: keys_pb2.Key, secret_expires_ms: int | None = None) -> KeyState:
        return cls(
            id=key.id,
            account_id=key.account_id,
            name=key.name,
            master=key.scope == keys_pb2.KEY_SCOPE_MASTER,
            revoked=key.revoked,
            allowed_models=frozenset(key.allowed_models),
            cap_micros=key.cap_micros if key.HasField("cap_micros") else None,
            strict=key.strict,
            limits=_limits_of(key),
            expires_ms=key.expires_ms if key.HasField("expires_ms") else None,
            secret_expires_ms=secret_expires_ms,
        )


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _limits_of(key: keys_pb2.Key) -> Limits | None:
    """None when the key has no limit at all: its requests skip every check."""
    limits = Limits.from_pb(key.rate_limits)
    return limits if limits.any else None


class KeyCache:
    def __init__(
        self,
        stub: keys_pb2_grpc.KeyServiceAsyncStub,
        metadata: tuple[tuple[str, str], ...],
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] = lambda key_id: None,
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._ttl = ttl_seconds
        self._clock = clock
        self._on_change = on_change
        self._entries: dict[bytes, tuple[KeyState | None, float]] = {}
        self._inflight: dict[bytes, asyncio.Future[KeyState | None]] = {}
        self._digests: dict[str, set[bytes]] = {}  # key id -> the digests cached for it
        self._after_seq = 0
        self._applied = 0  # key changes applied so far (a lookup that overlapped one asks again)
        self.watching = asyncio.Event()

    async def get(self, secret_sha256: bytes) -> KeyState | None:
        entry = self._entries.get(secret_sha256)
        if entry is not None and entry[1] > self._clock():
            return entry[0]
        pending = self._inflight.get(secret_sha256)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyState | None] = asyncio.get_running_loop().create_future()
        self._inflight[secret_sha256] = future
        try:
            state = await self._lookup(secret_sha256)
            future.set_result(state)
            return state
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: concurrent waiters re-raise it themselves
            raise
        finally:
            del self._inflight[secret_sha256]

    async def _lookup(self, secret_sha256: bytes) -> KeyState | None:
        """A change applied while a lookup was on its way may be newer than its answer (a
        rotation, a revocation it then missed): such an answer is asked for again, once."""
        applied = self._applied
        state = await self._lookup_once(secret_sha256)
        return state if self._applied == applied else await self._lookup_once(secret_sha256)

    async def _lookup_once(self, secret_sha256: bytes) -> KeyState | None:
        try:
            response = await self._stub.LookupKey(
                keys_pb2.LookupKeyRequest(secret_sha256=secret_sha256), metadata=self._metadata, timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                self._entries[secret_sha256] = (None, self._clock() + NEGATIVE_TTL_SECONDS)
                return None
            log.warning("LookupKey failed: %s %s", exc.code().name, exc.details())
            raise ControlPlaneUnavailable("the gateway cannot reach its control plane; try again") from exc
        secret_expires = response.secret_expires_ms if response.HasField("secret_expires_ms") else None
        state = KeyState.from_pb(response.key, secret_expires)
        self._entries[secret_sha256] = (state, self._clock() + self._ttl)
        self._digests.setdefault(state.id, set()).add(secret_sha256)
        return state

    def apply(self, change: keys_pb2.WatchKeysResponse) -> None:
        """Apply one WatchKeys change: replace the cached state (or the cached miss)."""
        if change.kind == keys_pb2.KEY_CHANGE_KIND_SYNC:
            self._after_seq = max(self._after_seq, change.seq)
            return
        self._after_seq = max(self._after_seq, change.seq)
        self._applied += 1
        self._on_change(change.key.id)
        live: dict[bytes, int | None] = {change.secret_sha256: None}
        if change.previous_secret_sha256:
            live[change.previous_secret_sha256] = change.previous_secret_expires_ms
        cached = self._digests.pop(change.key.id, set())
        for gone in cached - live.keys():  # a secret rotated out of its grace
            self._entries.pop(gone, None)
        kept = set()
        for secret_sha256, secret_expires in live.items():
            if secret_sha256 in self._entries:
                state = KeyState.from_pb(change.key, secret_expires)
                self._entries[secret_sha256] = (state, self._clock() + self._ttl)
                kept.add(secret_sha256)
        if kept:
            self._digests[change.key.id] = kept

    async def watch(self) -> None:
        """Follow WatchKeys forever, reconnecting with backoff."""
        backoff = 0.1
        while True:
            try:
                stream = self._stub.WatchKeys(
                    keys_pb2.WatchKeysRequest(after_seq=self._after_seq), metadata=self._metadata
                )
                async for change in stream:
                    self.apply(change)
                    self.watching.set()
                    backoff = 0.1
            except grpc.aio.AioRpcError as exc:
                log.warning("WatchKeys stream lost (%s); reconnecting", exc.code().name)
            self.watching.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

"""spendgate.v1.KeyService."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import grpc

from controlplane import auth
from controlplane.errors import InvalidArgument, NotFound
from controlplane.keystore import KeyChange, KeySpec, KeyStore, KeyUpdate
from controlplane.ratelimits import Limits
from controlplane.records import Clock, Key
from controlplane.services import convert
from controlplane.watch import KeyChangeFeed
from spendgate.v1 import keys_pb2, keys_pb2_grpc

KINDS = {
    "created": keys_pb2.KEY_CHANGE_KIND_CREATED,
    "updated": keys_pb2.KEY_CHANGE_KIND_UPDATED,
    "revoked": keys_pb2.KEY_CHANGE_KIND_REVOKED,
    "rotated": keys_pb2.KEY_CHANGE_KIND_ROTATED,
}
WATCH_HEARTBEAT_SECONDS = 1.0


class KeyService(keys_pb2_grpc.KeyServiceServicer):
    def __init__(self, keystore: KeyStore, feed: KeyChangeFeed, clock: Clock) -> None:
        self._keys = keystore
        self._feed = feed
        self._clock = clock

    def _pb(self, key: Key) -> keys_pb2.Key:
        return convert.key_to_pb(key, self._clock())

    def CreateKey(
        self, request: keys_pb2.CreateKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.CreateKeyResponse:
        spec = KeySpec(
            name=request.name,
            scope=convert.scope_from(request.scope),
            cap_micros=request.cap_micros if request.HasField("cap_micros") else None,
            cap_period=convert.period_from(request.cap_period),
            strict=request.strict,
            allowed_models=tuple(request.allowed_models),
            metadata=tuple(sorted(request.metadata.items())),
            expires_ms=request.expires_ms if request.HasField("expires_ms") else None,
            limits=Limits.from_pb(request.rate_limits),
        )
        key, secret = self._keys.create_key(auth.current_account(), spec)
        return keys_pb2.CreateKeyResponse(key=self._pb(key), secret=secret)

    def GetKey(
        self, request: keys_pb2.GetKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.GetKeyResponse:
        return keys_pb2.GetKeyResponse(
            key=self._pb(self._keys.get_key(auth.current_account(), request.key_id))
        )

    def ListKeys(
        self, request: keys_pb2.ListKeysRequest, context: grpc.ServicerContext
    ) -> keys_pb2.ListKeysResponse:
        page = self._keys.list_keys(
            auth.current_account(), request.page_size, request.page_token, request.include_revoked
        )
        return keys_pb2.ListKeysResponse(
            keys=[self._pb(k) for k in page.items], next_page_token=page.next_token
        )

    def UpdateKey(
        self, request: keys_pb2.UpdateKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.UpdateKeyResponse:
        update = KeyUpdate(
            name=request.name if request.HasField("name") else None,
            cap_micros=request.cap_micros if request.HasField("cap_micros") else None,
            remove_cap=request.remove_cap,
            cap_period=convert.period_from(request.cap_period, default=None) if request.cap_period else None,
            strict=request.strict if request.HasField("strict") else None,
            allowed_models=(
                tuple(request.allowed_models.models) if request.HasField("allowed_models") else None
            ),
            expires_ms=request.expires_ms if request.HasField("expires_ms") else None,
            remove_expiry=request.remove_expiry,
            metadata=tuple(sorted(request.metadata.entries.items()))
            if request.HasField("metadata")
            else None,
            limits=Limits.from_pb(request.rate_limits),
        )
        key = self._keys.update_key(auth.current_account(), request.key_id, update)
        return keys_pb2.UpdateKeyResponse(key=self._pb(key))

    def RotateKey(
        self, request: keys_pb2.RotateKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.RotateKeyResponse:
        grace = request.grace_ms if request.HasField("grace_ms") else None
        key, secret = self._keys.rotate_key(auth.current_account(), request.key_id, grace)
        return keys_pb2.RotateKeyResponse(key=self._pb(key), secret=secret)

    def RevokeKey(
        self, request: keys_pb2.RevokeKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.RevokeKeyResponse:
        return keys_pb2.RevokeKeyResponse(
            key=self._pb(self._keys.revoke_key(auth.current_account(), request.key_id))
        )

    def LookupKey(
        self, request: keys_pb2.LookupKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.LookupKeyResponse:
        if len(request.secret_sha256) != 32:
            raise InvalidArgument("secret_sha256", "must be the 32-byte SHA-256 digest of the secret")
        found = self._keys.find(request.secret_sha256)
        if found is None:
            raise NotFound("no key has this secret")
        reply = keys_pb2.LookupKeyResponse(key=self._pb(found.key))
        if found.secret_expires_ms is not None:
            reply.secret_expires_ms = found.secret_expires_ms
        return reply

    def WatchKeys(
        self, request: keys_pb2.WatchKeysRequest, context: grpc.ServicerContext
    ) -> Iterator[keys_pb2.WatchKeysResponse]:
        if request.after_seq < 0:
            raise InvalidArgument("after_seq", "must not be negative")
        subscription = self._feed.subscribe()
        try:
            after = request.after_seq
            # Changes the caller already has (or, on a fresh start, need not
            # replay): only ever skipped by sequence number, never by range, so
            # a change that commits late with a lower number is still sent.
            sent = self._feed.recent_seqs(upto=after)
            if after == 0:
                after = self._keys.head_seq()
                sent = self._feed.recent_seqs(upto=after)
                yield keys_pb2.WatchKeysResponse(seq=after, kind=keys_pb2.KEY_CHANGE_KIND_SYNC)
            for change in self._keys.changes_after(after, limit=100_000):
                sent.add(change.seq)
                yield self._change(change)
            while context.is_active():
                try:
                    live = subscription.get(timeout=WATCH_HEARTBEAT_SECONDS)
                except queue.Empty:
                    continue
                if live is None:
                    return  # server stopping
                if live.seq not in sent:
                    yield self._change(live)
        finally:
            self._feed.unsubscribe(subscription)

    def _change(self, change: KeyChange) -> keys_pb2.WatchKeysResponse:
        now = self._clock()
        key = change.key
        previous_ends = key.previous_secret_expires_ms(now)
        return keys_pb2.WatchKeysResponse(
            seq=change.seq,
            kind=KINDS[change.kind],
            key=convert.key_to_pb(key, now),
            secret_sha256=key.secret_sha256,
            previous_secret_sha256=key.old_secret_sha256 if previous_ends else b"",
            previous_secret_expires_ms=previous_ends or 0,
        )

"""The worker's key cache against a real control plane over gRPC, on both backends: a
LookupKey answered before a rotation but arriving after the rotation's WatchKeys change
must not leave the replaced secret cached as the key's current one (with grace 0 it
would have kept working on that worker for the cache's whole TTL)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

from clients.client import ControlPlaneClient
from controlplane.server import ControlPlane
from dataplane.keycache import KeyCache, digest
from spendgate.v1 import keys_pb2_grpc


class HeldLookups(grpc.aio.UnaryUnaryClientInterceptor):
    """Delivers the first LookupKey answer it sees only once `release` is set."""

    def __init__(self) -> None:
        self.answered = asyncio.Event()
        self.release = asyncio.Event()

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        call = await continuation(details, request)
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if not method.endswith("/LookupKey") or self.answered.is_set():
            return call
        response = await call  # the control plane has answered: the secret is current
        self.answered.set()
        await self.release.wait()
        return response


def test_a_lookup_overtaken_by_a_rotation_does_not_cache_the_old_secret(
    plane: ControlPlane, master: ControlPlaneClient
) -> None:
    key, old = master.create_key("rotated", cap_micros=1_000_000)

    async def scenario() -> None:
        held = HeldLookups()
        changed = asyncio.Event()
        async with grpc.aio.insecure_channel(plane.address, interceptors=[held]) as channel:
            metadata = (("authorization", f"Bearer {plane.tokens.service}"),)
            cache = KeyCache(
                keys_pb2_grpc.KeyServiceStub(channel), metadata, 30.0, on_change=lambda _: changed.set()
            )
            watch = asyncio.create_task(cache.watch())
            try:
                await asyncio.wait_for(cache.watching.wait(), 10)
                lookup = asyncio.create_task(cache.get(digest(old)))
                await asyncio.wait_for(held.answered.wait(), 10)
                await asyncio.to_thread(master.rotate_key, key.id, 0)  # the old secret stops now
                await asyncio.wait_for(changed.wait(), 10)  # the change arrived before the answer
                held.release.set()
                await lookup
                state = await cache.get(digest(old))  # what the next request with it gets
                assert state is None or state.refusal(0) is not None, state
            finally:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)

    asyncio.run(scenario())

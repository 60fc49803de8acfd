"""Every admitted request ends in exactly one Settle or Release (dataplane/lease.py),
whatever stops it: here, a cancellation, which is not an `Exception`.

The request path runs in process (proxy.handle as an ASGI app) against a real
control plane over gRPC, on both backends; the upstream is a stand-in that
takes the request and never answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import grpc
import pytest

from clients.client import ControlPlaneClient
from controlplane.server import ControlPlane
from dataplane import pricing, proxy
from dataplane.budget import Decision, GrpcBudget
from dataplane.config import Settings
from dataplane.forward import HttpxUpstream, UpstreamClient, UpstreamResponse
from dataplane.keycache import KeyCache
from dataplane.lease import Lease
from dataplane.routes import ROUTES
from dataplane.settlement import Charged, Settlement
from fakeupstream.server import running_mock
from spendgate.v1 import keys_pb2_grpc, usage_pb2_grpc
from tests.controlplane.test_concurrency import check_ledger
from tests.dataplane.test_budget import eventually, run, until_granted

CHAT = next(r for r in ROUTES if r.path == "/v1/chat/completions")


class NeverAnswers:
    """An upstream that takes the request and hangs, like a provider thinking for minutes."""

    def __init__(self) -> None:
        self.sent = asyncio.Event()

    async def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> UpstreamResponse:
        self.sent.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        pass


@asynccontextmanager
async def in_process(
    plane: ControlPlane, upstream: UpstreamClient, base_url: str = "http://upstream.invalid/v1"
) -> AsyncIterator[proxy.Gateway]:
    async with grpc.aio.insecure_channel(plane.address) as channel:
        metadata = (("authorization", f"Bearer {plane.tokens.service}"),)
        usage = usage_pb2_grpc.UsageServiceStub(channel)
        budget = GrpcBudget(usage, metadata, ttl_ms=600_000)
        catalog = pricing.Catalog()
        catalog.replace(await pricing.load(usage, metadata))
        keys = KeyCache(keys_pb2_grpc.KeyServiceStub(channel), metadata, 30.0)
        settings = Settings.from_env(
            {"SPENDGATE_OPENAI_BASE_URL": base_url, "SPENDGATE_OPENAI_API_KEY": "sk-x"}
        )
        budget.start()
        try:
            yield proxy.Gateway(settings, keys, budget, catalog, upstream)
        finally:
            await budget.stop()


def chat_request(
    secret: str, stream: bool = False, knobs: Mapping[str, str] | None = None
) -> tuple[dict[str, object], asyncio.Queue[dict[str, object]]]:
    message = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    body = json.dumps(message).encode()
    scope: dict[str, object] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": CHAT.path,
        "raw_path": CHAT.path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"authorization", f"Bearer {secret}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((k.encode(), v.encode()) for k, v in (knobs or {}).items()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
        "path_params": {},
    }
    inbox: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    inbox.put_nowait({"type": "http.request", "body": body, "more_body": False})
    return scope, inbox


async def start(gateway: proxy.Gateway, secret: str) -> asyncio.Task[None]:
    scope, inbox = chat_request(secret)

    async def send(message: object) -> None:
        raise AssertionError(f"nothing should be sent: {message}")

    return asyncio.create_task(proxy.handle(scope, inbox.get, send, CHAT, gateway))


def test_a_request_cancelled_while_upstream_thinks_frees_its_reservation_within_a_second(
    plane: ControlPlane, master: ControlPlaneClient
) -> None:
    key, secret = master.create_key("cancelled", cap_micros=5_000_000)

    async def scenario() -> None:
        upstream = NeverAnswers()
        async with in_process(plane, upstream) as gateway:
            task = await start(gateway, secret)
            await asyncio.wait_for(upstream.sent.wait(), 10)
            assert master.get_key(key.id).reserved_micros > 0  # held while upstream works
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await eventually(lambda: master.get_key(key.id).reserved_micros == 0, timeout=1.0)
        assert master.get_key(key.id).spent_micros == 0
        check_ledger(plane)

    run(scenario)


def test_a_cancelled_request_admitted_against_a_grant_gives_its_estimate_back(
    plane: ControlPlane, master: ControlPlaneClient
) -> None:
    key, secret = master.create_key("busy", cap_micros=50_000_000)

    async def scenario() -> None:
        upstream = NeverAnswers()
        async with in_process(plane, upstream) as gateway:
            budget = gateway.budget
            assert isinstance(budget, GrpcBudget)
            admitted: list[Decision] = []
            grant = (await until_granted(budget, key.id, admitted)).grant
            assert grant is not None
            for n, decision in enumerate(admitted):  # the warm-up requests end
                budget.release(f"warm-{n}", decision)
            await eventually(lambda: grant.outstanding == 0)
            balance = grant.balance
            tasks = [await start(gateway, secret) for _ in range(3)]
            await eventually(lambda: grant.outstanding == 3)
            assert grant.balance < balance
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert grant.outstanding == 0
            if not grant.retired:  # (a successor may have replaced it meanwhile)
                assert grant.balance == balance
            # Nothing of theirs is held: only live grants' blocks remain reserved.
            live = sum(g.size for g in budget._grants.values()) + (0 if grant.retired else grant.size)
            await eventually(lambda: master.get_key(key.id).reserved_micros <= live)
        assert master.get_key(key.id).reserved_micros == 0
        check_ledger(plane)

    run(scenario)


def test_requests_cancelled_at_random_moments_mixed_with_aborts_and_errors_leave_the_ledger_exact(
    plane: ControlPlane, master: ControlPlaneClient
) -> None:
    """Against the fake provider over real HTTP: streams that finish, streams the
    upstream cuts, upstream errors and slow answers, each task cancelled at a
    random moment (before the Reserve, while upstream thinks, mid-stream) or not
    at all. Afterwards every key's spent is the sum of its events and nothing is held."""
    keys = [master.create_key(f"fuzz-{n}", cap_micros=50_000_000) for n in range(3)]
    rng = random.Random(9)
    endings: tuple[dict[str, str], ...] = (
        {},
        {"x-mock-abort-after": "3"},
        {"x-mock-status": "500"},
        {"x-mock-delay-ms": "150"},
        {"x-mock-chunk-delay-ms": "15"},
    )

    async def one(gateway: proxy.Gateway, secret: str, stream: bool, knobs: Mapping[str, str]) -> None:
        scope, inbox = chat_request(secret, stream, {"x-mock-output-tokens": "12", **knobs})

        async def send(message: object) -> None:
            pass

        task = asyncio.create_task(proxy.handle(scope, inbox.get, send, CHAT, gateway))
        if rng.random() < 0.6:
            await asyncio.sleep(rng.random() * 0.25)
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def scenario() -> None:
        with running_mock() as mock:
            upstream = HttpxUpstream(5.0, 30.0)
            try:
                async with in_process(plane, upstream, mock.url + "/v1") as gateway:
                    await asyncio.gather(
                        *(
                            one(gateway, rng.choice(keys)[1], rng.random() < 0.7, rng.choice(endings))
                            for _ in range(60)
                        )
                    )
            finally:
                await upstream.aclose()

    run(scenario)
    check_ledger(plane)
    for key, _ in keys:
        after = master.get_key(key.id)
        events = master.list_usage_events(key.id, page_size=1000).events
        assert after.reserved_micros == 0
        assert after.spent_micros == sum(e.cost_micros for e in events)
    check_ledger(plane)


class Recorder:
    """A Reserver that records what it is told; reserve can be made to hang."""

    def __init__(self, granted: bool = True, hang: bool = False) -> None:
        self.calls: list[tuple[str, str]] = []
        self._granted = granted
        self._hang = hang

    def admit_now(self, key_id: str, amount_micros: int, tokens: int = 0) -> Decision | None:
        return None  # no grants here: every lease reserves

    async def reserve(self, key_id: str, request_id: str, amount_micros: int, tokens: int = 0) -> Decision:
        if self._hang:
            await asyncio.Event().wait()
        return Decision(
            self._granted, "" if self._granted else "key_cap", 0, 0, 0, 0, amount_micros=amount_micros
        )

    def settle(self, settlement: Settlement, decision: Decision) -> None:
        self.calls.append(("settle", settlement.request_id))

    def release(self, request_id: str, decision: Decision | None) -> None:
        self.calls.append(("release" if decision else "release-by-id", request_id))

    async def charged(self, request_id: str, timeout: float) -> Charged | None:
        return None


@pytest.mark.parametrize(
    ("budget", "settles", "fails", "expected"),
    [
        (Recorder(), True, False, [("settle", "r")]),
        (Recorder(), False, False, [("release", "r")]),
        (Recorder(), False, True, [("release", "r")]),
        (Recorder(), True, True, [("settle", "r")]),
        (Recorder(granted=False), False, False, []),  # refused: nothing held
    ],
)
def test_a_lease_ends_exactly_once(budget: Recorder, settles: bool, fails: bool, expected: object) -> None:
    async def scenario() -> None:
        with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
            async with Lease(budget, "r") as lease:
                decision = await lease.reserve("k", 10)
                if settles and decision.granted:
                    lease.settle(Settlement("r", "k", "openai", "gpt-4o-mini"))
                if fails:
                    raise RuntimeError("boom")
                lease.release()  # a second end is a no-op

    run(scenario)
    assert budget.calls == expected


def test_a_reserve_cut_short_is_released_by_id() -> None:
    budget = Recorder(hang=True)

    async def scenario() -> None:
        async def request() -> None:
            async with Lease(budget, "r") as lease:
                await lease.reserve("k", 10)

        task = asyncio.create_task(request())
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(scenario)
    assert budget.calls == [("release-by-id", "r")]

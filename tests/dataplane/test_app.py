"""The data-plane app in process: `create_app` given its parts (an in-memory key table and
budget, the built-in catalog, the fake provider on loopback), driven by the official
SDKs through `httpx.ASGITransport`. No control plane, no subprocess: the request path,
its error handlers and its request ids, end to end."""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import anthropic
import httpx
import httpx2
import openai
import pytest
from starlette.routing import Match, Route, Router
from starlette.types import Receive, Scope, Send

from controlplane import catalog as builtin_catalog
from controlplane.services import convert
from dataplane import app as app_module
from dataplane import pricing, proxy
from dataplane.app import Worker, create_app
from dataplane.budget import Decision
from dataplane.config import Settings
from dataplane.edge import Edge
from dataplane.errors import BadRequest
from dataplane.forward import HttpxUpstream
from dataplane.keycache import KeyState, digest
from dataplane.metrics import Metrics
from dataplane.settlement import Charged, Settlement
from fakeupstream.server import MockUpstream, running_mock
from tests.dataplane.test_budget import run

SECRET, POOR, REVOKED = "sg_live_inprocess", "sg_live_poor", "sg_live_revoked"


@dataclass
class MemoryBudget:
    """A Reserver over a dict: each key's cap, what is held, what was settled or released."""

    caps: dict[str, int]
    held: dict[str, int] = field(default_factory=dict)
    settled: list[Settlement] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    def admit_now(self, key_id: str, amount_micros: int, tokens: int = 0) -> Decision | None:
        return None

    async def reserve(self, key_id: str, request_id: str, amount_micros: int, tokens: int = 0) -> Decision:
        granted = amount_micros <= self.caps[key_id] - sum(self.held.values())
        if granted:
            self.held[request_id] = amount_micros
        return Decision(
            granted, "" if granted else "key_cap", self.caps[key_id], 0, 0, 0, amount_micros=amount_micros
        )

    def settle(self, settlement: Settlement, decision: Decision) -> None:
        self.held.pop(settlement.request_id)
        self.settled.append(settlement)

    def release(self, request_id: str, decision: Decision | None) -> None:
        self.held.pop(request_id, None)
        self.released.append(request_id)

    async def charged(self, request_id: str, timeout: float) -> Charged | None:
        return None


class MemoryKeys:
    def __init__(self, *keys: tuple[str, KeyState]) -> None:
        self._by_digest = {digest(secret): state for secret, state in keys}

    async def get(self, secret_sha256: bytes) -> KeyState | None:
        return self._by_digest.get(secret_sha256)


def key(key_id: str, revoked: bool = False) -> KeyState:
    return KeyState(key_id, "acct", key_id, False, revoked, frozenset(), None)


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with running_mock() as running:
        yield running


Scenario = Callable[[httpx.AsyncClient, MemoryBudget], Awaitable[None]]


def in_process(mock: MockUpstream, scenario: Scenario) -> MemoryBudget:
    budget = MemoryBudget({"key_a": 50_000_000, "key_poor": 1})
    keys = MemoryKeys((SECRET, key("key_a")), (POOR, key("key_poor")), (REVOKED, key("key_r", revoked=True)))
    env = {f"SPENDGATE_{p.upper()}_BASE_URL": f"{mock.url}/{p}/v1" for p in ("openai", "anthropic")}
    env |= {"SPENDGATE_OPENAI_API_KEY": "sk-upstream", "SPENDGATE_ANTHROPIC_API_KEY": "sk-ant-upstream"}
    env["SPENDGATE_GOOGLE_BASE_URL"] = f"{mock.url}/google"
    env["SPENDGATE_GOOGLE_API_KEY"] = "g-upstream"
    settings = Settings.from_env(env)
    prices = [
        pricing.ModelPrice.from_pb(convert.price_to_pb(p))
        for p in builtin_catalog.builtin()
        if not p.effective_from_ms
    ]

    @contextlib.asynccontextmanager
    async def connect(_: Settings) -> AsyncIterator[Worker]:
        upstream = HttpxUpstream(5.0, 30.0)
        try:
            yield Worker(proxy.Gateway(settings, keys, budget, pricing.Catalog(prices), upstream))
        finally:
            await upstream.aclose()

    app = create_app(settings, connect)

    async def go() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                await scenario(client, budget)

    run(go)
    return budget


def test_a_chat_completion_is_settled_under_the_request_id_the_client_gets_back(mock: MockUpstream) -> None:
    async def scenario(client: httpx.AsyncClient, budget: MemoryBudget) -> None:
        # openai names httpx2's client in its annotation but takes an httpx one as it is (no isinstance check)
        sdk = openai.AsyncOpenAI(
            base_url="http://gateway/v1",
            api_key=SECRET,
            http_client=client,  # type: ignore[arg-type]
            max_retries=0,
        )
        raw = await sdk.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
        assert raw.parse().choices[0].message.content
        (settled,) = budget.settled
        assert settled.request_id == raw.headers["x-spendgate-request-id"]
        assert (settled.key_id, settled.model, settled.unit("output_tokens")) == ("key_a", "gpt-4o-mini", 5)
        assert budget.held == {} and mock.requests[-1].header("authorization") == "Bearer sk-upstream"

    in_process(mock, scenario)


def test_errors_come_back_in_the_calling_providers_shape_and_hold_nothing(mock: MockUpstream) -> None:
    async def scenario(client: httpx.AsyncClient, budget: MemoryBudget) -> None:
        seen = len(mock.requests)
        sdk = openai.AsyncOpenAI(
            base_url="http://gateway/v1",
            api_key=POOR,
            http_client=client,  # type: ignore[arg-type]
            max_retries=0,
        )
        with pytest.raises(openai.APIStatusError) as over:
            await sdk.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        assert over.value.status_code == 402
        assert over.value.body["code"] == "spend_cap_exceeded"  # type: ignore[index]
        # (the anthropic SDK brings its own fork of httpx)
        app = client._transport.app  # type: ignore[attr-defined]
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)) as own:
            claude = anthropic.AsyncAnthropic(
                base_url="http://gateway", api_key=REVOKED, http_client=own, max_retries=0
            )
            with pytest.raises(anthropic.AuthenticationError) as revoked:
                await claude.messages.create(
                    model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
                )
        assert revoked.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
        gemini = await client.post(
            "/v1beta/models/no-such-model:generateContent",
            headers={"x-goog-api-key": SECRET},
            json={"contents": []},
        )
        assert gemini.status_code == 400 and gemini.json()["error"]["status"] == "INVALID_ARGUMENT"
        assert gemini.headers["x-spendgate-request-id"]
        assert len(mock.requests) == seen and budget.held == {} and budget.settled == []

    in_process(mock, scenario)


def test_unknown_routes_and_methods_answer_in_the_openai_error_shape(mock: MockUpstream) -> None:
    async def scenario(client: httpx.AsyncClient, budget: MemoryBudget) -> None:
        missing = await client.get("/v1/nothing-here")
        assert missing.status_code == 404
        assert (
            missing.json()["error"]["type"] == "invalid_request_error" and "/v1/nothing-here" in missing.text
        )
        wrong = await client.get("/v1/chat/completions")
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
        ids = {missing.headers["x-spendgate-request-id"], wrong.headers["x-spendgate-request-id"]}
        assert len(ids) == 2  # one per request
        bad = await client.post(
            "/v1/chat/completions", headers={"authorization": f"Bearer {SECRET}"}, content=b"{not json"
        )
        assert bad.status_code == 400 and json.loads(bad.text)["error"]["type"] == "invalid_request_error"

    in_process(mock, scenario)


def test_a_path_parameter_cannot_walk_out_of_its_route(mock: MockUpstream) -> None:
    """`/v1/text-to-speech/..` would reach `/v1` upstream with the operator's key (issue 15.10)."""
    for value in ("..", ".", "a/../..", "a%2F.."):
        with pytest.raises(BadRequest) as refused:
            proxy.check_path({"voice_id": value})
        assert refused.value.param == "voice_id"
    proxy.check_path({"voice_id": "21m00Tcm4TlvDq8ikWAM"})
    proxy.check_path({"model": "gemini-2.5-pro"})

    async def scenario(client: httpx.AsyncClient, budget: MemoryBudget) -> None:
        seen = len(mock.requests)
        # Sent as raw bytes: httpx would otherwise resolve the dot segment itself.
        app = client._transport.app  # type: ignore[attr-defined]
        sent: list[dict[str, object]] = []
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/v1/text-to-speech/..", "raw_path": b"/v1/text-to-speech/..",
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("gateway", 80),
            "headers": [(b"xi-api-key", SECRET.encode()), (b"content-type", b"application/json")],
        }  # fmt: skip
        body = [{"type": "http.request", "body": b'{"text": "hi"}', "more_body": False}]

        async def receive() -> dict[str, object]:
            return body.pop() if body else {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        assert sent[0]["status"] == 400 and len(mock.requests) == seen and budget.held == {}

    in_process(mock, scenario)


def test_a_part_whose_type_is_not_a_string_is_forwarded_not_a_500(mock: MockUpstream) -> None:
    """The estimate walks every object in the body; a `type` the client made an object or a
    list (unhashable) used to raise inside it and answer 500 without reaching the provider."""

    async def scenario(client: httpx.AsyncClient, budget: MemoryBudget) -> None:
        seen = len(mock.requests)
        content = [{"type": {}}, {"type": ["image_url"]}, {"type": "text", "text": "hi"}]
        answer = await client.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {SECRET}"},
            json={
                "model": "gpt-4o-mini",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": content}],
            },
        )
        assert answer.status_code == 200, answer.text  # the provider decides what the parts mean
        assert len(mock.requests) == seen + 1 and budget.held == {} and len(budget.settled) == 1

    in_process(mock, scenario)


def test_a_stream_asked_without_usage_goes_upstream_as_the_client_wrote_it_plus_the_option(
    mock: MockUpstream,
) -> None:
    """The gateway adds `stream_options.include_usage` as the body's last member instead of
    serialising the whole body again: non-ASCII text, a 30-digit seed and the client's spacing
    reach the provider byte for byte."""

    async def scenario(client: httpx.AsyncClient, budget: MemoryBudget) -> None:
        sent = (
            b'{ "model": "gpt-4o-mini", "stream": true, "max_tokens": 5, "seed": 123456789012345678901234567890,\n'
            b'  "messages": [{"role": "user", "content": "d\xc3\xa9j\xc3\xa0 vu \\u00e9"}] }\n'
        )
        answer = await client.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {SECRET}", "content-type": "application/json"},
            content=sent,
        )
        assert answer.status_code == 200 and "[DONE]" in answer.text and '"usage":{' not in answer.text
        upstream = mock.requests[-1].body
        assert upstream == sent.rstrip()[:-1].rstrip() + b', "stream_options": {"include_usage": true}}'
        assert json.loads(upstream)["stream_options"] == {"include_usage": True}
        (settled,) = budget.settled
        assert settled.unit("output_tokens") == 5  # the usage chunk was read, then kept from the client

    in_process(mock, scenario)


def test_each_request_a_route_is_taken_directly_for_is_one_the_router_would_give_it() -> None:
    """Edge sends a request for a path without parameters straight to its route: for every
    route of the app, and every method, that is the route Starlette's router would pick."""
    edge = create_app(Settings.from_env({}))
    routes = edge.router.routes
    assert "/v1/chat/completions" in edge._direct and "/v1/keys/{key_id}" not in edge._direct
    for route in routes:
        path = getattr(route, "path", "")
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            direct = edge._direct.get(path)
            if direct is None or method not in (direct.methods or ()):
                continue  # the router's
            scope = {"type": "http", "path": path, "root_path": "", "method": method}
            chosen = next(r for r in routes if r.matches(scope)[0] is Match.FULL)
            assert direct is chosen, (method, path)


def test_a_path_an_earlier_route_also_matches_is_left_to_the_router() -> None:
    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("not called")

    first, shadowed, plain = Route("/v1/{x}", endpoint), Route("/v1/a", endpoint), Route("/v2", endpoint)
    edge = Edge(Router([first, shadowed, plain]), Metrics(directory=""))
    assert edge._direct == {"/v2": plain}


def test_a_loaded_catalog_is_frozen_and_the_young_generation_is_collected_less_often() -> None:
    """What a worker does when its catalog arrives (app._freeze_heap, the catalog's on_replace)."""
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        pricing.Catalog(on_replace=app_module._freeze_heap).replace([])
        assert gc.get_threshold() == (app_module.YOUNG_GC_THRESHOLD, 10, 10)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

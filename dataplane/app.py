"""The data-plane ASGI app: the routes, behind one middleware (edge.py: a request id on
every request, its metrics and access line, each error in the shape of the provider whose
route was called), and a lifespan that holds the worker's parts (`Worker`, built by
`connect_grpc` or given by a test) and samples its queues for /metrics (metrics.py)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hmac
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from dataplane import logs, pricing, proxy, rest
from dataplane.auth import authenticate
from dataplane.budget import GrpcBudget
from dataplane.config import Settings
from dataplane.edge import Edge
from dataplane.errors import NotFound, Unauthorized
from dataplane.forward import make_upstream
from dataplane.keycache import KeyCache
from dataplane.metrics import Backlog, Metrics
from dataplane.spool import DeadLetters, Spool
from spendgate.v1 import keys_pb2_grpc, usage_pb2_grpc

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """What one worker's requests share. `connect_grpc` builds it against a control
    plane; a test may build one from in-memory parts and hand `create_app` a `connect`
    that yields it."""

    gateway: proxy.Gateway
    keys_api: rest.KeysApi | None = None  # the REST facade's control-plane client
    healthy: Callable[[], Awaitable[bool]] = field(default=lambda: _true())
    backlog: Callable[[], Backlog] | None = None  # its settlement queue and spool, for /metrics


async def _true() -> bool:
    return True


Connect = Callable[[Settings], AbstractAsyncContextManager[Worker]]


@contextlib.asynccontextmanager
async def connect_grpc(settings: Settings, metrics: Metrics | None = None) -> AsyncIterator[Worker]:
    """The worker's control-plane channel, key cache, budget, catalog and upstream client,
    with the loops that keep them fresh; all closed on the way out."""
    channel = grpc.aio.insecure_channel(
        settings.controlplane,
        # Come back quickly after a control-plane restart (gRPC's default backoff reaches 2 minutes).
        options=[("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 2000)],
    )
    metadata = (("authorization", f"Bearer {settings.service_token}"),)
    usage_stub = usage_pb2_grpc.UsageServiceStub(channel)
    spool = Spool(settings.spool_dir) if settings.spool_dir else None
    budget = GrpcBudget(
        usage_stub,
        metadata,
        settings.reservation_ttl_ms,
        spool,
        settings.grants,
        on_reserve=metrics.reserved if metrics is not None else None,
    )
    keys = KeyCache(
        keys_pb2_grpc.KeyServiceStub(channel),
        metadata,
        settings.key_cache_ttl_seconds,
        on_change=budget.key_changed,
    )
    catalog = pricing.Catalog(on_replace=_freeze_heap)
    upstream = make_upstream(
        settings.upstream_client, settings.upstream_connect_timeout, settings.upstream_read_timeout
    )
    health: Any = health_pb2_grpc.HealthStub(channel)  # (its stub types no aio methods)

    async def healthy() -> bool:
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    budget.start()
    tasks = [
        asyncio.create_task(keys.watch()),
        asyncio.create_task(_load_catalog(catalog, usage_stub, metadata)),
    ]
    try:
        yield Worker(
            proxy.Gateway(settings, keys, budget, catalog, upstream),
            rest.KeysApi(channel),
            healthy,
            lambda: Backlog(budget.pending, spool.backlog if spool is not None else 0),
        )
    finally:
        await budget.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.aclose()
        await channel.close()


def create_app(settings: Settings | None = None, connect: Connect | None = None) -> Edge:
    settings = settings or Settings.from_env()
    # In a worker process (serve.py) no one configured logging yet: the parent's choice is in the env.
    logs.configure(logs.log_format(os.environ), logging.WARNING, logs.access_log(os.environ))
    metrics = Metrics()
    connect = connect or functools.partial(connect_grpc, metrics=metrics)
    state: dict[str, Worker] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        async with connect(settings) as worker:
            state["worker"] = worker
            sampler = None
            if worker.backlog is not None:
                sampler = asyncio.create_task(metrics.sample_forever(worker.backlog, settings.spool_dir))
            try:
                yield
            finally:
                if sampler is not None:
                    sampler.cancel()
                    await asyncio.gather(sampler, return_exceptions=True)
                metrics.close()

    def inference(route: proxy.Route) -> Route:
        return Route(route.path, _Inference(route, state), methods=["POST"])

    async def models(request: Request) -> Response:
        gateway = state["worker"].gateway
        key = await authenticate(request, gateway.keys)
        allowed = [
            m
            for m in gateway.catalog.models()
            if not key.allowed_models or {m.model, f"{m.provider}/{m.model}"} & key.allowed_models
        ]
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": m.model, "object": "model", "created": 0, "owned_by": m.provider} for m in allowed
                ],
            }
        )

    async def healthz(request: Request) -> Response:
        worker = state["worker"]
        ok = await worker.healthy() and worker.gateway.catalog.loaded.is_set()
        body: dict[str, object] = {"status": "ok" if ok else "control plane unreachable"}
        if settings.spool_dir is not None:  # settlements refused for good, waiting for a replay
            body["dead_letters"] = len(DeadLetters(settings.spool_dir).read())
        return JSONResponse(body, status_code=200 if ok else 503)

    async def scrape(request: Request) -> Response:
        token = settings.metrics_token
        given = request.headers.get("authorization", "")
        if token and not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("GET /metrics needs 'Authorization: Bearer <SPENDGATE_METRICS_TOKEN>'.")
        body, content_type = await asyncio.to_thread(metrics.exposition, request.headers.get("accept", ""))
        return Response(body, headers={"content-type": content_type})

    def rest_route(name: str, path: str, method: str) -> Route:
        async def endpoint(request: Request) -> Response:
            api = state["worker"].keys_api
            if api is None:
                raise NotFound("This gateway serves no key API.")
            response: Response = await getattr(api, name)(request)
            return response

        return Route(path, endpoint, methods=[method])

    routes = [
        *(inference(r) for r in proxy.ROUTES),
        Route("/v1/models", models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", scrape, methods=["GET"]),
        rest_route("create", "/v1/keys", "POST"),
        rest_route("list", "/v1/keys", "GET"),
        rest_route("get", "/v1/keys/{key_id}", "GET"),
        rest_route("update", "/v1/keys/{key_id}", "PATCH"),
        rest_route("revoke", "/v1/keys/{key_id}", "DELETE"),
        rest_route("rotate", "/v1/keys/{key_id}/rotate", "POST"),
        rest_route("key_usage", "/v1/keys/{key_id}/usage", "GET"),
        rest_route("usage", "/v1/usage", "GET"),
        rest_route("set_thresholds", "/v1/keys/{key_id}/thresholds", "PUT"),
        rest_route("get_thresholds", "/v1/keys/{key_id}/thresholds", "GET"),
        rest_route("set_webhook", "/v1/webhooks/endpoint", "PUT"),
        rest_route("get_webhook", "/v1/webhooks/endpoint", "GET"),
        rest_route("delete_webhook", "/v1/webhooks/endpoint", "DELETE"),
        rest_route("set_wallet_threshold", "/v1/webhooks/wallet-threshold", "PUT"),
        rest_route("webhook_deliveries", "/v1/webhooks/deliveries", "GET"),
        rest_route("retry_webhook_delivery", "/v1/webhooks/deliveries/{event_id}/retry", "POST"),
        rest_route("own_key", "/v1/key", "GET"),
    ]
    return Edge(Router(routes, lifespan=lifespan), metrics)


@dataclass(frozen=True)
class _Inference:
    """A proxied route's endpoint, as an ASGI app (Starlette wraps plain functions as
    request -> response). It returns the request's coroutine rather than being one
    around it: a frame less for every resumption of the request's task to pass through."""

    route: proxy.Route
    state: dict[str, Worker]

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return proxy.handle(scope, receive, send, self.route, self.state["worker"].gateway)


def _freeze_heap() -> None:
    """The catalog, with the modules, is most of a worker's long-lived heap (~90k objects).
    Frozen, the cyclic GC no longer walks it on each full collection, which under load came
    every few hundred requests (docs/benchmarks.md). Reference counting still frees the
    catalog a refresh replaced: nothing in it is cyclic.

    And the youngest generation is collected when YOUNG_GC_THRESHOLD more objects are
    alive than at the last collection, not 700: the requests in flight hold more than 700
    objects, so at the default a collection came every dozen requests and walked them all
    (about 25 µs a request at 32 concurrent streams, measured); reference counting frees a
    request's objects when it ends, so only cyclic garbage waits for the collector, and it
    stays bounded by the threshold."""
    gc.collect(1)
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, older, oldest)


YOUNG_GC_THRESHOLD = 10_000


async def _load_catalog(catalog: pricing.Catalog, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
    """Load the catalog as soon as the control plane answers, then keep it fresh."""
    delay = 0.2
    while True:
        try:
            catalog.replace(await pricing.load(stub, metadata))
            break
        except grpc.aio.AioRpcError as exc:
            log.warning("catalog load failed (%s); retrying", exc.code().name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    await pricing.refresh_forever(catalog, stub, metadata)

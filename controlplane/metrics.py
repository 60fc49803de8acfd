"""The control plane's Prometheus metrics, served over HTTP on a port of its own
(`--metrics-port`, SPENDGATE_METRICS_PORT): gRPC cannot serve a scrape.

Every RPC is counted and timed by `RpcMetrics`, a server interceptor placed
before the auth interceptor, so a call refused for its credential counts too, by
service, method and status code. What the ledger answered (a reservation granted
or refused and why, a settlement taken, seen before or refused, a grant) is read
from the response messages on their way out: the servicers know nothing of
metrics. Streams (WatchKeys) are counted when they end, not timed.

What is in the database (open reservations, the webhook outbox, each export
sink's backlog) is read when a scrape asks (`StoreCollector`): a few indexed
counts, nothing kept in memory that could disagree with another replica."""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from controlplane.exports import Cursors
from controlplane.store.schema import reservations, webhook_outbox
from spendgate.contract import enum_names
from spendgate.v1 import usage_pb2

log = logging.getLogger(__name__)

RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REFUSALS = enum_names(usage_pb2.RefusalReason)  # 1 -> "key_cap", ...


class RpcMetrics(grpc.ServerInterceptor):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "spendgate_controlplane_rpcs",
            "RPCs handled, by service, method and status code.",
            ("service", "method", "code"),
            registry=registry,
        )
        self.latency = Histogram(
            "spendgate_controlplane_rpc_duration_seconds",
            "Time to answer a unary RPC, by service and method.",
            ("service", "method"),
            buckets=RPC_BUCKETS,
            registry=registry,
        )
        self.reservations = Counter(
            "spendgate_reservations",
            "Reserve answers: granted, or the refusal's reason (key_cap, wallet, key_revoked, ...).",
            ("result",),
            registry=registry,
        )
        self.settlements = Counter(
            "spendgate_settlements",
            "Settlements (Settle and SettleBatch): settled, duplicate (taken before) or refused.",
            ("result",),
            registry=registry,
        )
        self.grants = Counter(
            "spendgate_grants",
            "Grant answers (budget blocks for busy keys): granted or refused.",
            ("result",),
            registry=registry,
        )
        self._observers: dict[tuple[str, str], Callable[[str, float | None], None]] = {}
        self._outcomes: dict[str, Callable[[Any], None]] = {
            "Reserve": self._reserved,
            "Grant": self._granted,
            "Settle": self._settled,
            "SettleBatch": self._settled_batch,
        }

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        service, _, method = details.method.lstrip("/").rpartition("/")
        outcome = self._outcomes.get(method) if service == "spendgate.v1.UsageService" else None
        if handler.unary_unary is not None:
            return _unary(handler, self._unary_observer(service, method), outcome)
        if handler.unary_stream is not None:
            return _stream(handler, self._unary_observer(service, method))
        return handler

    def _unary_observer(self, service: str, method: str) -> Callable[[str, float | None], None]:
        """The method's observer, made once: its label children are bound then, or at a code's first call."""
        known = self._observers.get((service, method))
        if known is not None:
            return known
        histogram = self.latency.labels(service, method)
        codes: dict[str, Counter] = {}

        def observe(code: str, seconds: float | None) -> None:
            counter = codes.get(code)
            if counter is None:
                counter = codes[code] = self.calls.labels(service, method, code)
            counter.inc()
            if seconds is not None:
                histogram.observe(seconds)

        self._observers[(service, method)] = observe
        return observe

    def _reserved(self, response: usage_pb2.ReserveResponse) -> None:
        result = "granted" if response.granted else REFUSALS.get(response.reason, "unknown")
        self.reservations.labels(result).inc()

    def _granted(self, response: usage_pb2.GrantResponse) -> None:
        self.grants.labels("granted" if response.granted else "refused").inc()

    def _settled(self, response: usage_pb2.SettleResponse) -> None:
        self.settlements.labels("duplicate" if response.duplicate else "settled").inc()

    def _settled_batch(self, response: usage_pb2.SettleBatchResponse) -> None:
        for outcome in response.settled:
            result = "refused" if outcome.error else "duplicate" if outcome.duplicate else "settled"
            self.settlements.labels(result).inc()


def _code(context: grpc.ServicerContext, returned: bool) -> str:
    code = context.code()  # type: ignore[attr-defined]  # set by abort / set_code; else None
    if code is None:
        return "OK" if returned else "UNKNOWN"
    return str(code.name)


def _unary(
    handler: grpc.RpcMethodHandler[Any, Any],
    observe: Callable[[str, float | None], None],
    outcome: Callable[[Any], None] | None,
) -> grpc.RpcMethodHandler[Any, Any]:
    inner = handler.unary_unary
    assert inner is not None

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        returned = False
        try:
            response = inner(request, context)
            returned = True
            if outcome is not None:
                outcome(response)
            return response
        finally:
            observe(_code(context, returned), time.perf_counter() - started)

    return grpc.unary_unary_rpc_method_handler(
        unary,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _stream(
    handler: grpc.RpcMethodHandler[Any, Any], observe: Callable[[str, float | None], None]
) -> grpc.RpcMethodHandler[Any, Any]:
    inner = handler.unary_stream
    assert inner is not None

    def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        returned = False
        try:
            yield from inner(request, context)
            returned = True
        finally:
            observe(_code(context, returned), None)

    return grpc.unary_stream_rpc_method_handler(
        stream,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class StoreCollector(Collector):
    """Gauges read from the database at each scrape."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._cursors = Cursors(engine)

    def collect(self) -> Iterable[Metric]:
        try:
            with self._engine.connect() as conn:
                active = conn.execute(
                    select(func.count()).select_from(reservations).where(reservations.c.state == "active")
                ).scalar_one()
                outbox: dict[str, int] = dict(
                    conn.execute(
                        select(webhook_outbox.c.status, func.count())
                        .where(webhook_outbox.c.status.in_(("pending", "dead")))
                        .group_by(webhook_outbox.c.status)
                    ).all()
                )
            sinks = self._cursors.status()
        except SQLAlchemyError as exc:
            log.warning("metrics: the database did not answer (%s)", type(exc).__name__)
            return []
        held = GaugeMetricFamily(
            "spendgate_reservations_active",
            "Reservations and grants holding budget now (released at settlement, release or expiry).",
            value=active,
        )
        webhooks = GaugeMetricFamily(
            "spendgate_webhook_outbox_events",
            "Webhook events in the outbox: pending (to be delivered or retried) or dead (gave up).",
            labels=("status",),
        )
        for status in ("pending", "dead"):
            webhooks.add_metric((status,), outbox.get(status, 0))
        backlog = GaugeMetricFamily(
            "spendgate_export_backlog_events",
            "Usage events not yet acknowledged by each billing-system sink.",
            labels=("sink", "kind"),
        )
        for sink in sinks:
            backlog.add_metric((sink.sink, sink.kind), sink.behind)
        return [held, webhooks, backlog]


class ControlPlaneMetrics:
    """The registry, the RPC interceptor, and the HTTP server a scrape reaches."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.registry.register(StoreCollector(engine))
        self.interceptor = RpcMetrics(self.registry)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def serve(self, host: str, port: int) -> int:
        """Start answering GET /metrics on host:port (0: a free port); returns the port."""
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise OSError(errno.EADDRINUSE, f"the metrics port {host}:{port} is in use") from None
        return int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

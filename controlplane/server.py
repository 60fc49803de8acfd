"""The control plane process: storage, ledger, services, auth, reflection,
health, metrics (an HTTP port of its own) and the background threads (key
change feed, lease sweeper, webhook deliverer), assembled in one place."""

from __future__ import annotations

import errno
import logging
import os
import secrets as pysecrets
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from controlplane import catalog, egress
from controlplane.alerts import Alerts
from controlplane.auth import Authenticator, AuthInterceptor, Tokens
from controlplane.delivery import Deliverer, Policy
from controlplane.exports import SinkConfig, runner_for
from controlplane.keystore import KeyStore
from controlplane.ledger import Ledger
from controlplane.metrics import ControlPlaneMetrics
from controlplane.money import DEFAULT_FEE_BPS
from controlplane.records import Clock, system_clock
from controlplane.reports import Reports
from controlplane.services.admin import AdminService
from controlplane.services.keys import KeyService
from controlplane.services.usage import UsageService
from controlplane.services.webhooks import WebhookService
from controlplane.store import db
from controlplane.watch import KeyChangeFeed
from controlplane.webhooks import WebhookStore
from spendgate.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    usage_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    webhooks_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
)
# A call's metadata the control plane accepts; larger is refused by gRPC itself (RESOURCE_EXHAUSTED).
MAX_METADATA_BYTES = 64 * 1024


@dataclass
class Config:
    data_dir: Path
    db_url: str = ""  # empty: SQLite in data_dir
    host: str = "127.0.0.1"
    grpc_port: int = 50051  # 0 picks a free port
    catalog_file: Path | None = None
    fee_bps: int = DEFAULT_FEE_BPS
    max_workers: int = 64
    sweep_seconds: float = 5.0
    admin_token: str = field(default_factory=lambda: os.environ.get("SPENDGATE_ADMIN_TOKEN", ""))
    service_token: str = field(default_factory=lambda: os.environ.get("SPENDGATE_SERVICE_TOKEN", ""))
    # Billing-system sinks (controlplane/exports); None: those SPENDGATE_CONFIG / SPENDGATE_EXPORTS name.
    exports: list[SinkConfig] | None = None
    # Webhook delivery (controlplane/delivery.py): the first retry's delay, doubled each time.
    webhook_retry_base_ms: int = field(
        default_factory=lambda: int(os.environ.get("SPENDGATE_WEBHOOK_RETRY_BASE_MS", "5000"))
    )
    webhook_max_attempts: int = Policy.max_attempts
    webhook_poll_seconds: float = Policy.poll_seconds
    # Let webhooks reach loopback, private and link-local addresses (egress.py); off by default.
    webhook_allow_private: bool = field(
        default_factory=lambda: os.environ.get(egress.ALLOW_VARIABLE, "").lower() in ("1", "true")
    )
    # GET /metrics over HTTP on this port (0 picks a free one); None: not served.
    metrics_port: int | None = None


def token_from_file(path: Path) -> tuple[str, bool]:
    """Read a token file, or create it (mode 0600); returns (token, created)."""
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = pysecrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


class ControlPlane:
    def __init__(self, config: Config, clock: Clock = system_clock) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.admin_token_file = config.data_dir / "admin-token"
        self.service_token_file = config.data_dir / "service-token"
        admin = config.admin_token or self._file_token(self.admin_token_file, "admin")
        service = config.service_token or self._file_token(self.service_token_file, "service")
        self.tokens = Tokens(admin=admin, service=service)

        self.engine = db.make_engine(config.db_url or db.sqlite_url(config.data_dir))
        db.migrate(self.engine)
        added = catalog.sync(self.engine, catalog.merged(config.catalog_file), clock())
        if added:
            log.info("catalog: %d price row(s) added", added)

        self.keystore = KeyStore(self.engine, clock)
        self.ledger = Ledger(self.engine, clock, config.fee_bps, observer=Alerts())
        self.deliverer = Deliverer(
            self.engine,
            clock,
            Policy(
                retry_base_ms=config.webhook_retry_base_ms,
                max_attempts=config.webhook_max_attempts,
                poll_seconds=config.webhook_poll_seconds,
                allow_private=config.webhook_allow_private,
            ),
        )
        self.feed = KeyChangeFeed(self.keystore, clock)
        self.exports = runner_for(self.engine, config.exports, os.environ, clock)
        self._stopping = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep, name="lease-sweeper", daemon=True)
        self.metrics = ControlPlaneMetrics(self.engine)
        self.metrics_port: int | None = None

        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="rpc"),
            # Metrics first: a call the auth interceptor refuses is counted too.
            interceptors=[
                self.metrics.interceptor,
                AuthInterceptor(Authenticator(self.tokens, self.keystore)),
            ],
            # gRPC's default SO_REUSEPORT lets a second server bind the same port and take
            # half the calls (with other tokens): a port in use must fail the start instead.
            # gRPC refuses metadata over 8 KiB at random and over 16 KiB always (RESOURCE_EXHAUSTED,
            # before any interceptor runs): with one limit of MAX_METADATA_BYTES, a long bogus
            # credential gets the UNAUTHENTICATED every bad credential gets.
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_metadata_size", MAX_METADATA_BYTES),
                ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ],
        )
        keys_pb2_grpc.add_KeyServiceServicer_to_server(
            KeyService(self.keystore, self.feed, clock), self.server
        )
        usage_pb2_grpc.add_UsageServiceServicer_to_server(
            UsageService(self.engine, self.keystore, self.ledger, Reports(self.engine), clock), self.server
        )
        admin_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminService(self.engine, self.keystore, clock), self.server
        )
        webhooks_pb2_grpc.add_WebhookServiceServicer_to_server(
            WebhookService(WebhookStore(self.engine, clock, config.webhook_allow_private)), self.server
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        try:
            self.port = self.server.add_insecure_port(f"{config.host}:{config.grpc_port}")
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            where = f"{config.host}:{config.grpc_port}"
            raise OSError(errno.EADDRINUSE, f"the gRPC port {where} is in use (another spendgate?)")

    def _file_token(self, path: Path, what: str) -> str:
        token, created = token_from_file(path)
        if created:
            log.warning("generated the %s token; it is in %s (mode 0600)", what, path)
        return token

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def start(self) -> None:
        if self.config.metrics_port is not None:  # first: a port in use fails the start, as gRPC's does
            self.metrics_port = self.metrics.serve(self.config.host, self.config.metrics_port)
            log.info("control plane metrics on http://%s:%d/metrics", self.config.host, self.metrics_port)
        self.feed.start()
        self._sweeper.start()
        self.exports.start()
        self.deliverer.start()
        self.server.start()
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("control plane serving gRPC on %s", self.address)

    def _sweep(self) -> None:
        while not self._stopping.wait(self.config.sweep_seconds):
            try:
                self.ledger.expire_stale()
            except Exception:  # keep sweeping after a database hiccup
                log.exception("lease sweep failed; retrying")

    def stop(self, grace: float = 2.0) -> None:
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        self.feed.stop()
        self.server.stop(grace).wait()
        self._sweeper.join(timeout=5)
        self.exports.stop()
        self.deliverer.stop()
        self.metrics.stop()
        self.engine.dispose()

    def wait(self) -> None:
        self.server.wait_for_termination()

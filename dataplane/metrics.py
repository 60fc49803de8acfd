"""The data plane's Prometheus metrics, served at `/metrics` on its own port and
summed across its workers.

The workers are separate processes, so their metrics are kept the way
prometheus-client's multiprocess mode keeps them: serve.py points
PROMETHEUS_MULTIPROC_DIR at a directory of its own, every worker writes its
values to mmap'd files there (a write into shared memory, no I/O, no RPC), and
whichever worker a scrape reaches reads and sums all of them. Counters of a
worker that died stay in the sum (a counter never goes back); its `live` gauges
are dropped (`mark_process_dead`, at its exit or, if it was killed, at the next
scrape). A worker built without that variable (an in-process test) serves its
own values.

A request pays for this once, at its end (`finished`, called by edge.py): one
counter increment through a label child cached in a dict, and an observation of
the upstream's latency. What proxy.py learns on the way (the provider, model and
key; why a reservation was refused; the upstream's time to headers) it leaves in
the ASGI scope (under requestid.ROUTED, ...), so it never touches a metric itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import Scope

from dataplane.requestid import REFUSAL, ROUTED, UPSTREAM_SECONDS
from dataplane.spool import DeadLetters

# A refusal's reason by its status; a 402's or a revoked key's 401 comes from the ledger (REFUSAL).
# Only the gateway's own: a 4xx the provider answered is counted in spendgate_requests_total alone.
REFUSED = {401: "unauthorized", 402: "key_cap", 403: "forbidden", 429: "rate_limit"}
REASONS = ("unauthorized", "key_revoked", "key_expired", "key_cap", "wallet", "forbidden", "rate_limit")
RESERVE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
SAMPLE_SECONDS = 1.0  # how often a worker writes its queue gauges


@dataclass(frozen=True)
class Backlog:
    settle_queue: int  # settlements and releases this worker has not had taken yet
    spool: int  # records in its spool file without a `done`


class Metrics:
    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory if directory is not None else os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        # In multiprocess mode the values live in the directory's files, read back at each scrape.
        self.registry = None if self.directory else CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "spendgate_requests",
            "Requests answered, by provider (none before the model is known), route and status class.",
            ("provider", "route", "status_class"),
            registry=registry,
        )
        self.refusals = Counter(
            "spendgate_refusals",
            "Requests refused: 401 unauthorized / key_revoked / key_expired, 402 key_cap / wallet, "
            "403 forbidden, 429 rate_limit.",
            ("reason",),
            registry=registry,
        )
        self.reserve = Histogram(
            "spendgate_reserve_duration_seconds",
            "Round trip of a Reserve RPC to the control plane (requests admitted against a grant make none).",
            buckets=RESERVE_BUCKETS,
            registry=registry,
        )
        self.upstream = Histogram(
            "spendgate_upstream_latency_seconds",
            "From sending the request upstream to the response's headers, by provider.",
            ("provider",),
            buckets=UPSTREAM_BUCKETS,
            registry=registry,
        )
        self.settle_queue = Gauge(
            "spendgate_settle_queue_depth",
            "Settlements and releases queued or in flight to the control plane, all workers.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.spool_backlog = Gauge(
            "spendgate_spool_backlog",
            "Records in the workers' spool files the control plane has not taken yet.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.dead_letters = Gauge(
            "spendgate_dead_letters",
            "Settlements the control plane refused for good, waiting for `spendgate settlements replay`.",
            multiprocess_mode="livemax",  # one file per spool directory, read by every worker
            registry=registry,
        )
        self._requests: dict[tuple[str, str, int], Counter] = {}
        self._refusals = {reason: self.refusals.labels(reason) for reason in REASONS}
        self._upstream: dict[str, Histogram] = {}

    def finished(self, scope: Scope, status: int) -> None:
        """A request's answer, once it is over (edge.py)."""
        route = scope.get("route")
        path = route.path if route is not None else "unmatched"
        routed = scope.get(ROUTED)
        provider = routed[0] if routed is not None else "none"
        key = (provider, path, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(provider, path, f"{status // 100}xx")
        child.inc()
        upstream = scope.get(UPSTREAM_SECONDS)
        if status in REFUSED and upstream is None:  # (once forwarded, the status is the provider's)
            reason = scope.get(REFUSAL) or REFUSED[status]
            refused = self._refusals.get(reason)
            if refused is None:
                refused = self._refusals[reason] = self.refusals.labels(reason)
            refused.inc()
        if upstream is not None:
            histogram = self._upstream.get(provider)
            if histogram is None:
                histogram = self._upstream[provider] = self.upstream.labels(provider)
            histogram.observe(upstream)

    def reserved(self, seconds: float) -> None:
        self.reserve.observe(seconds)

    async def sample_forever(
        self, backlog: Callable[[], Backlog], spool_dir: Path | None, every: float = SAMPLE_SECONDS
    ) -> None:
        letters = _DeadLetterCount(spool_dir) if spool_dir is not None else None
        while True:
            now = backlog()
            self.settle_queue.set(now.settle_queue)
            self.spool_backlog.set(now.spool)
            if letters is not None and letters.changed():
                self.dead_letters.set(await asyncio.to_thread(letters.count))
            await asyncio.sleep(every)

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The text a scrape gets (Prometheus's format or OpenMetrics, as `accept` asks)."""
        encoder, content_type = choose_encoder(accept)
        registry = self.registry
        if registry is None:
            assert self.directory is not None
            self._forget_dead_workers()
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
        return encoder(registry), content_type

    def close(self) -> None:
        """The worker is stopping: its live gauges leave the sum."""
        if self.directory:
            mark_process_dead(os.getpid(), self.directory)  # type: ignore[no-untyped-call]

    def _forget_dead_workers(self) -> None:
        """A killed worker never ran `close`: its queue gauges would stay in the sum."""
        assert self.directory is not None
        forget_workers(Path(self.directory), only_dead=True)


def forget_workers(directory: Path, only_dead: bool = False) -> None:
    """Drop workers' live gauges from the sum: every worker's, once all have exited
    (serve.py; whether or not each got to `close`), or only those no longer running."""
    for path in directory.glob("gauge_live*_*.db"):
        pid = int(path.stem.rpartition("_")[2])
        if only_dead:
            try:
                os.kill(pid, 0)
                continue
            except ProcessLookupError:
                pass
            except PermissionError:
                continue  # alive, as another user
        mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


class _DeadLetterCount:
    """The dead-letter file's count, read again only when the file changed."""

    def __init__(self, spool_dir: Path) -> None:
        self._letters = DeadLetters(spool_dir)
        self._seen: tuple[int, int] | None = None

    def changed(self) -> bool:
        try:
            stat = self._letters.path.stat()
            now = (stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            now = (0, 0)
        if now == self._seen:
            return False
        self._seen = now
        return True

    def count(self) -> int:
        with contextlib.suppress(FileNotFoundError):
            return len(self._letters.read())
        return 0

"""Run data-plane workers under Hypercorn, alone (`spendgate dataplane`) or
beside an embedded control plane (`spendgate up`).

Workers are separate processes (Hypercorn's spawn-based pool sharing one
listening socket); each builds its own app, key cache and gRPC channel from
the environment, which is how the parent passes them their settings. Their
metrics meet in one directory (metrics.py): PROMETHEUS_MULTIPROC_DIR if the
caller named one, emptied of an earlier run's files first, else a temporary
directory removed when the workers are gone. Hypercorn's own lines go through
the worker's log handler (logs.py), in the same format as the gateway's."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from hypercorn.config import Config as HypercornConfig
from hypercorn.run import run

from dataplane import metrics

log = logging.getLogger(__name__)


def serve(host: str, port: int, workers: int, env: Mapping[str, str]) -> int:
    """Serve until SIGINT/SIGTERM; returns Hypercorn's exit code."""
    with metrics_directory(env.get("PROMETHEUS_MULTIPROC_DIR", "")) as directory:
        # Inherited by the spawned workers; prometheus-client reads it when a worker imports it.
        os.environ.update({**env, "PROMETHEUS_MULTIPROC_DIR": str(directory)})
        config = HypercornConfig()
        config.bind = [f"{host}:{port}"]
        config.workers = max(1, workers)
        config.application_path = "dataplane.app:create_app()"
        # uvloop's event loop: a third of the proxy's CPU per request (docs/benchmarks.md).
        loop = env.get("SPENDGATE_EVENT_LOOP", os.environ.get("SPENDGATE_EVENT_LOOP", "uvloop"))
        if loop not in ("uvloop", "asyncio"):
            raise ValueError(f"SPENDGATE_EVENT_LOOP must be uvloop or asyncio, not {loop!r}")
        config.worker_class = loop
        config.accesslog = None  # the gateway writes its own (logs.py), with the request id
        config.errorlog = logging.getLogger("hypercorn.error")
        config.keep_alive_timeout = 75
        config.graceful_timeout = 10
        config.loglevel = "WARNING"
        config.include_server_header = False  # the software and its version are nobody's business
        try:
            return run(config)
        finally:
            metrics.forget_workers(directory)  # all have exited: a worker stopped mid-close leaves none


@contextlib.contextmanager
def metrics_directory(given: str) -> Iterator[Path]:
    if not given:
        with tempfile.TemporaryDirectory(prefix="spendgate-metrics-") as temporary:
            yield Path(temporary)
        return
    path = Path(given)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # an earlier run's counters would be summed with this one's
        stale.unlink()
    yield path

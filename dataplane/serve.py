"""Run data-plane workers under Hypercorn, alone (`spendgate dataplane`) or
beside an embedded control plane (`spendgate up`).

Workers are separate processes (Hypercorn's spawn-based pool sharing one
listening socket); each builds its own app, key cache and gRPC channel from
the environment, which is how the parent passes them their settings."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from hypercorn.config import Config as HypercornConfig
from hypercorn.run import run

log = logging.getLogger(__name__)


def serve(host: str, port: int, workers: int, env: Mapping[str, str]) -> int:
    """Serve until SIGINT/SIGTERM; returns Hypercorn's exit code."""
    os.environ.update(env)  # inherited by the spawned workers
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.workers = max(1, workers)
    config.application_path = "dataplane.app:create_app()"
    # uvloop's event loop: a third of the proxy's CPU per request (docs/benchmarks.md).
    loop = env.get("SPENDGATE_EVENT_LOOP", os.environ.get("SPENDGATE_EVENT_LOOP", "uvloop"))
    if loop not in ("uvloop", "asyncio"):
        raise ValueError(f"SPENDGATE_EVENT_LOOP must be uvloop or asyncio, not {loop!r}")
    config.worker_class = loop
    config.accesslog = None
    config.errorlog = "-"
    config.keep_alive_timeout = 75
    config.graceful_timeout = 10
    config.loglevel = "WARNING"
    return run(config)

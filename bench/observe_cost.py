"""What observability adds to one request's CPU, measured call by call.

    python bench/observe_cost.py [--mode multiprocess|memory] [--rounds N]

A request pays for: `Metrics.finished` (edge.py: the requests counter, and for a
proxied request the upstream-latency histogram), `Metrics.reserved` (budget.py: the
Reserve histogram, only for a request that makes a Reserve round trip), three scope
writes and two `perf_counter` calls (proxy.py, edge.py), and the access line's
`isEnabledFor` check, or the line itself when `--access-log` is on. Each is timed
here on its own, in the mode the data plane's workers run in (multiprocess: the
values are mmap'd files, as under `spendgate up`) or in memory (one process).
docs/observability.md has the figures."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, for `dataplane`


def per_call_ns(fn: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(5):  # the best of five: the least disturbed by the rest of the machine
        started = time.perf_counter_ns()
        for _ in range(rounds):
            fn()
        best = min(best, (time.perf_counter_ns() - started) / rounds)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("multiprocess", "memory"), default="multiprocess")
    parser.add_argument("--rounds", type=int, default=100_000)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="spendgate-observe-cost-")
    if args.mode == "multiprocess":
        # prometheus-client picks its value class when first imported: hence the late imports.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory

    from dataplane import logs, requestid
    from dataplane.metrics import Metrics

    metrics = Metrics()
    route = SimpleNamespace(path="/v1/chat/completions")
    proxied = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "route": route,
        requestid.ROUTED: ("openai", "gpt-4o-mini", "key_0123456789"),
        requestid.UPSTREAM_SECONDS: 0.0123,
    }
    refused = {**proxied, requestid.REFUSAL: "key_cap"}
    del refused[requestid.UPSTREAM_SECONDS]
    scope: dict[str, object] = {}

    def notes() -> None:  # what proxy.py and edge.py add besides the metric calls
        began = time.perf_counter()
        scope[requestid.ROUTED] = ("openai", "gpt-4o-mini", "key_0123456789")
        scope[requestid.UPSTREAM_SECONDS] = time.perf_counter() - began

    logs.configure("json", logging.WARNING, access=False)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - for the process's life
    off = per_call_ns(lambda: logs.ACCESS.isEnabledFor(logging.INFO), args.rounds)
    logs.ACCESS.setLevel(logging.INFO)
    line = per_call_ns(lambda: logs.access(proxied, 200, 0.0456), args.rounds // 10)

    rows = [
        ("finished, a proxied 200", per_call_ns(lambda: metrics.finished(proxied, 200), args.rounds)),
        ("finished, a 402", per_call_ns(lambda: metrics.finished(refused, 402), args.rounds)),
        ("reserved (a Reserve RPC's time)", per_call_ns(lambda: metrics.reserved(0.0008), args.rounds)),
        ("scope notes + perf_counter x2", per_call_ns(notes, args.rounds)),
        ("access line off (isEnabledFor)", off),
        ("access line on (JSON, to /dev/null)", line),
    ]
    print(f"mode: {args.mode} (Python {sys.version.split()[0]})")
    for name, ns in rows:
        print(f"  {name:<40} {ns / 1000:7.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

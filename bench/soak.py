"""Soak: spendgate under steady streaming traffic for a long stretch, then a ledger check.

    python bench/soak.py [--minutes 10] [--keys 4] [--concurrency 8] [--workers 2]

Starts on 127.0.0.1 only: the mock upstream (`spendgate mock-upstream`) and
`spendgate up` (control plane on SQLite + Hypercorn workers). Mints one capped
key per load generator, then runs bench/loadgen.py (closed loop, keep-alive)
with streaming chat completions at a fixed concurrency per key for the whole
duration — a steady rate, since the mock paces every stream (16 tokens, 10 ms
apart). Prints throughput, p50/p99 latency and time to first byte, the memory
(RSS) of every process at the start and at the end, and the final ledger check
read straight from the database: for every key, the sum of its usage events
equals its spent counter and nothing is left reserved."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPENDGATE = str(Path(sys.executable).with_name("spendgate"))
BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "soak"}],
    "stream": True,
    "max_tokens": 16,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def family(pid: int) -> list[int]:
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except FileNotFoundError:
            children = []
        todo.extend(int(c) for c in children)
    return out


def memory(procs: dict[str, int]) -> dict[str, int]:
    table = {}
    for name, pid in procs.items():
        for i, member in enumerate(family(pid)):
            table[name if i == 0 else f"{name} child {i}"] = rss_kib(member)
    return table


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


def post_json(url: str, body: dict[str, object], token: str) -> dict[str, object]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return dict(json.loads(r.read()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--keys", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=8, help="streams in flight per key")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    sys.path.insert(0, str(HERE.parent))
    from clients.client import ControlPlaneClient

    data = Path(tempfile.mkdtemp(prefix="spendgate-soak-"))
    mock_port, http_port, grpc_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "SPENDGATE_OPENAI_BASE_URL": f"http://127.0.0.1:{mock_port}/v1",
        "SPENDGATE_OPENAI_API_KEY": "sk-soak",
        "SPENDGATE_ADMIN_TOKEN": "",
    }
    procs: list[subprocess.Popen[bytes]] = []
    log_file = open(data / "up.log", "wb")  # noqa: SIM115
    try:
        procs.append(
            subprocess.Popen(
                [SPENDGATE, "mock-upstream", "--port", str(mock_port), "--no-record"],
                stdout=subprocess.DEVNULL,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    SPENDGATE,
                    "up",
                    "--data-dir",
                    str(data),
                    "--http-port",
                    str(http_port),
                    "--grpc-port",
                    str(grpc_port),
                    "--workers",
                    str(args.workers),
                ],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        )
        base = f"http://127.0.0.1:{http_port}"
        wait_http(base + "/healthz")
        with ControlPlaneClient(
            f"127.0.0.1:{grpc_port}", (data / "admin-token").read_text().strip()
        ) as admin:
            master = admin.create_account("soak", 10**12).master_key_secret
        keys = [
            post_json(
                base + "/v1/keys", {"name": f"soak_{i}", "scope": "standard", "max_spend_usd": 1000}, master
            )
            for i in range(args.keys)
        ]
        names = {"mock upstream": procs[0].pid, "spendgate up": procs[1].pid}
        time.sleep(2)
        start_mem = memory(names)
        seconds = args.minutes * 60
        loads = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "loadgen.py"),
                    "--port",
                    str(http_port),
                    "--header",
                    f"Authorization: Bearer {key['secret']}",
                    "--header",
                    "x-mock-chunk-delay-ms: 10",
                    "--body",
                    json.dumps(BODY),
                    "--concurrency",
                    str(args.concurrency),
                    "--duration",
                    str(seconds),
                    "--warmup",
                    "0",
                    "--timeout",
                    "60",
                ],
                stdout=subprocess.PIPE,
            )
            for key in keys
        ]
        results = [json.loads(load.communicate(timeout=seconds + 120)[0]) for load in loads]
        time.sleep(4)  # let the last settlements land and idle grants go back (2 s idle)
        end_mem = memory(names)

        completed = sum(r["completed_total"] for r in results)
        rps = sum(r["rps"] for r in results)
        p50 = max(r["latency_ms"]["p50"] for r in results)
        p99 = max(r["latency_ms"]["p99"] for r in results)
        ttfb50 = max(r["ttfb_ms"]["p50"] for r in results)
        ttfb99 = max(r["ttfb_ms"]["p99"] for r in results)
        errors = sum(r["errors"] for r in results)
        print(
            f"soak: {args.minutes:g} min, {args.keys} keys x {args.concurrency} streams, {args.workers} worker(s)"
        )
        print(f"  streams completed {completed}, {rps:.1f} streams/s, errors {errors}")
        print(f"  latency p50 {p50:.1f} ms  p99 {p99:.1f} ms   ttfb p50 {ttfb50:.1f} ms  p99 {ttfb99:.1f} ms")
        print("  memory (RSS, MiB)        start      end")
        for name in sorted(set(start_mem) | set(end_mem)):
            print(f"    {name:<22} {start_mem.get(name, 0) / 1024:7.1f}  {end_mem.get(name, 0) / 1024:7.1f}")

        db = sqlite3.connect(data / "spendgate.db")
        rows = db.execute(
            "SELECT k.name, k.spent_micros, k.reserved_micros, COALESCE(SUM(e.cost_micros), 0), COUNT(e.seq) "
            "FROM keys k LEFT JOIN usage_events e ON e.key_id = k.id WHERE k.scope = 'standard' GROUP BY k.id"
        ).fetchall()
        db.close()
        ok = True
        print("  ledger                   events     spent   sum(events)  reserved")
        for name, spent, reserved, total, count in rows:
            good = spent == total and reserved == 0
            ok &= good
            print(
                f"    {name:<20} {count:9d} {spent:9d} {total:12d} {reserved:9d}  {'ok' if good else 'MISMATCH'}"
            )
        events = sum(r[4] for r in rows)
        print(f"  ledger check: {'PASS' if ok else 'FAIL'} (events {events}, requests completed {completed})")
        problems = [line for line in (data / "up.log").read_text().splitlines() if "ERROR" in line]
        print(f"  gateway log: {len(problems)} error line(s) in {data / 'up.log'}")
        for line in problems[:5]:
            print("    " + line[:200])
        return 0 if ok else 1
    finally:
        log_file.close()
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())

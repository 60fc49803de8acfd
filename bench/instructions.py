"""Instructions per request, counted by valgrind's callgrind: the bench's steady figure.

    python bench/instructions.py                 # JSON and streams, 400 requests each (about 2 minutes)
    python bench/instructions.py --mode stream --requests 1000

On this two-core machine the CPU time per request moves by 5-10 % from run to run
with the scheduler, so a change worth 2 % cannot be seen in `bench.py`'s figures.
Callgrind counts the instructions a process executes instead: the same code on the
same requests gives the same count to about 0.1 %, whatever else the machine does.
It does not count cache misses, so the CPU-time ratio to the bare proxy runs a little
above the instruction ratio; use this to decide between two versions of the code, and
`bench.py` for the figures the targets are stated in.

What it runs: the fake provider and `spendgate up --workers 1`, as `bench.py` does,
for the control plane and a key. Then, one at a time under callgrind, two servers in
a process of their own, each Hypercorn's asyncio server on uvloop with the bench's
configuration: the aiohttp + uvloop bare proxy (b2), and a spendgate data-plane worker
with the real worker's environment (its own spool). Each gets unmeasured warm-up
requests, then instrumentation is switched on (`callgrind_control -i on`) for the
measured ones, and the count is divided by the requests completed.

Needs valgrind (Debian's `valgrind`, on every machine of this kind)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import bench  # noqa: E402


def serve(which: str, port: int, upstream: str, env_file: str) -> None:
    """In this process: one server, as Hypercorn's uvloop worker runs it (the `--serve` mode)."""
    import uvloop
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{bench.HOST}:{port}"]
    config.accesslog = None
    config.keep_alive_timeout = 75
    config.loglevel = "WARNING"
    config.include_server_header = False
    app: Any
    if which == "spendgate":
        worker_env = Path(env_file).read_bytes().decode().split("\0")
        os.environ.update(dict(item.split("=", 1) for item in worker_env if item.startswith("SPENDGATE_")))
        from dataplane.app import create_app

        app = create_app()
    else:
        import bare_proxy

        os.environ["BARE_PROXY_UPSTREAM_KEY"] = bench.UPSTREAM_KEY
        app = bare_proxy.create_app("aiohttp", upstream)
    uvloop.run(hypercorn_serve(app, config))


def total_instructions(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def measure(
    stack: bench.Stack,
    which: str,
    upstream_port: int,
    env_file: Path,
    auth: str,
    mode: str,
    args: argparse.Namespace,
) -> float:
    port = bench.free_port()
    out = stack.tmp / f"callgrind.{which}.{mode}"
    env = {**stack.env, "SPENDGATE_SPOOL_DIR": str(stack.tmp / f"spool-{which}-{mode}")}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(stack.tmp / f"metrics-{which}-{mode}")
    os.makedirs(env["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        __file__,
        "--serve",
        which,
        str(port),
        f"http://{bench.HOST}:{upstream_port}",
        str(env_file),
    ]
    with open(stack.tmp / f"{which}-{mode}.log", "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if bench.http_get(port, "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{which} did not start under valgrind: see {stack.tmp}")
            time.sleep(0.5)

        def load(requests: int) -> int:
            argv = [sys.executable, str(HERE / "loadgen.py"), "--port", str(port)]
            argv += ["--concurrency", str(args.concurrency), "--duration", "3600", "--warmup", "0"]
            argv += ["--body", bench.body(mode == "stream"), "--max-requests", str(requests)]
            argv += ["--header", f"x-mock-output-tokens: {bench.OUTPUT_TOKENS}", "--header", auth]
            done = subprocess.run(argv, capture_output=True, text=True, env=stack.env, check=True)
            result = json.loads(done.stdout)
            if result.get("errors"):
                raise RuntimeError(f"{which}: {result['errors']} failed requests")
            return int(result["completed_total"])

        load(args.warmup)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True, check=True)
        completed = load(args.requests)
        subprocess.run(["callgrind_control", "--dump", str(proc.pid)], capture_output=True, check=True)
        time.sleep(1)
        if args.keep:  # for callgrind_annotate, per C function
            shutil.copy(f"{out}.1", Path(args.keep) / f"callgrind.{which}.{mode}.{completed}")
        return total_instructions(Path(f"{out}.1")) / completed
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(*sys.argv[2:6])  # type: ignore[arg-type]
        return 0
    p = argparse.ArgumentParser(
        description="Instructions per request: spendgate vs the aiohttp + uvloop bare proxy."
    )
    p.add_argument("--mode", choices=("json", "stream", "both"), default="both")
    p.add_argument("--requests", type=int, default=400, help="measured requests per server (default 400)")
    p.add_argument("--warmup", type=int, default=150, help="unmeasured requests first (default 150)")
    p.add_argument("--concurrency", type=int, default=8, help="connections (default 8)")
    p.add_argument("--keep", metavar="DIR", help="copy the callgrind output files here")
    args = p.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    modes = ("json", "stream") if args.mode == "both" else (args.mode,)
    with bench.Stack(patience=0) as stack:
        mock = stack.start_mock()
        spendgate, secret = stack.start_spendgate(mock.port)
        env_file = Path(tempfile.mkstemp(dir=stack.tmp)[1])
        env_file.write_bytes(Path(f"/proc/{spendgate.pids['proxy']}/environ").read_bytes())
        print(
            f"{args.requests} requests per server after {args.warmup} of warm-up, {args.concurrency} connections"
        )
        for mode in modes:
            bare = measure(
                stack, "bare", mock.port, env_file, f"Authorization: Bearer {bench.UPSTREAM_KEY}", mode, args
            )
            own = measure(
                stack, "spendgate", mock.port, env_file, f"Authorization: Bearer {secret}", mode, args
            )
            print(
                f"  {mode:6s}  (b2) bare, aiohttp + uvloop {bare:>12,.0f}   spendgate {own:>12,.0f}"
                f"   instructions per request: {own / bare:.2f}x",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

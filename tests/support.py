"""Helpers for tests that run spendgate as real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The console script pip installed beside this interpreter: what a user runs.
SPENDGATE = str(Path(sys.executable).with_name("spendgate"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spendgate(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI the way a user would."""
    return subprocess.run(
        [SPENDGATE, *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_controlplane(
    data_dir: Path, extra: Sequence[str] = (), env: dict[str, str] | None = None, port: int = 0
) -> tuple[subprocess.Popen[str], str]:
    """Start `spendgate controlplane` and wait until its health check serves."""
    port = port or free_port()
    proc = subprocess.Popen(
        [SPENDGATE, "controlplane", "--data-dir", str(data_dir), "--grpc-port", str(port), *extra],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    address = f"127.0.0.1:{port}"
    wait_serving(address, proc)
    return proc, address


def wait_serving(address: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        # typeshed's HealthStub leaves out the callables its __init__ sets; this is the one we call.
        check: grpc.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]
        check = stub.Check  # type: ignore[attr-defined]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"control plane exited: {proc.stdout.read() if proc.stdout else ''}")
            try:
                if (
                    check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                time.sleep(0.1)
    raise TimeoutError(f"control plane at {address} did not become healthy")


def stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""

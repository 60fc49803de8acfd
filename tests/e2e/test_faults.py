"""Faults injected into separately running planes: the control plane killed
mid-load (fail closed, spool, replay exactly once) and a data-plane worker
killed mid-request (its lease expires, nothing is charged)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from clients.client import ControlPlaneClient
from fakeupstream.server import MockUpstream
from tests.e2e.conftest import Account, Running, upstream_env
from tests.support import SPENDGATE, free_port, start_controlplane, stop

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me a long story."}]


@dataclass
class Planes:
    tmp: Path
    env: dict[str, str]
    grpc_port: int
    http_port: int
    cp: subprocess.Popen[str] | None = None
    dp: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start_cp(self) -> None:
        self.cp, _ = start_controlplane(self.tmp / "cp", env=self.env, port=self.grpc_port)

    def kill_cp(self) -> None:
        assert self.cp is not None
        self.cp.send_signal(signal.SIGKILL)
        self.cp.communicate(timeout=10)

    def start_dp(self) -> None:
        self.dp = subprocess.Popen(
            [
                SPENDGATE,
                "dataplane",
                "--controlplane",
                f"127.0.0.1:{self.grpc_port}",
                "--http-port",
                str(self.http_port),
                "--workers",
                "2",
                "--spool-dir",
                str(self.tmp / "spool"),
            ],
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so the test can kill the workers too
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("data plane did not become healthy")

    def kill_dp(self) -> None:
        assert self.dp is not None
        os.killpg(self.dp.pid, signal.SIGKILL)  # the parent and every worker, mid-request
        self.dp.wait(10)

    def account(self) -> Account:
        with ControlPlaneClient(f"127.0.0.1:{self.grpc_port}", self.env["SPENDGATE_ADMIN_TOKEN"]) as admin:
            created = admin.create_account("faults-" + uuid.uuid4().hex[:6], 100_000_000)
        running = Running(self.base, f"127.0.0.1:{self.grpc_port}", self.tmp / "cp", self.dp)  # type: ignore[arg-type]
        return Account(created.account.id, created.master_key_secret, running)


@pytest.fixture
def planes(mock: MockUpstream, tmp_path: Path) -> Iterator[Planes]:
    env = {
        **upstream_env(mock),
        "SPENDGATE_ADMIN_TOKEN": "admin-" + uuid.uuid4().hex,
        "SPENDGATE_SERVICE_TOKEN": "svc-" + uuid.uuid4().hex,
        "SPENDGATE_RESERVATION_TTL_MS": "2000",
    }
    planes = Planes(tmp_path, env, free_port(), free_port())
    planes.start_cp()
    planes.start_dp()
    yield planes
    if planes.dp is not None and planes.dp.poll() is None:
        os.killpg(planes.dp.pid, signal.SIGTERM)
        planes.dp.wait(30)
    if planes.cp is not None and planes.cp.poll() is None:
        stop(planes.cp)


def stream_all(base: str, secret: str, tokens: int) -> str:
    with openai.OpenAI(base_url=base + "/v1", api_key=secret, max_retries=0) as client:
        chunks = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            max_tokens=tokens,
            extra_headers={"x-mock-output-tokens": str(tokens), "x-mock-chunk-delay-ms": "100"},
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_control_plane_killed_mid_load_loses_and_doubles_nothing(planes: Planes, mock: MockUpstream) -> None:
    account = planes.account()
    key = account.mint("busy", max_spend_usd=1)
    secret = str(key["secret"])
    stranger = account.mint("never-used")
    seen = len(mock.requests)
    with ThreadPoolExecutor(6) as pool:
        streams = [pool.submit(stream_all, planes.base, secret, 20) for _ in range(6)]
        time.sleep(0.8)  # all six are mid-stream
        planes.kill_cp()
        texts = [s.result(timeout=30) for s in streams]
    assert all(len(t.split()) == 20 for t in texts)  # in-flight requests finished

    # Control plane down: new requests fail closed, in the provider's shape, and are never forwarded.
    for who in (secret, str(stranger["secret"])):  # a cached key and one no worker has seen
        with openai.OpenAI(base_url=planes.base + "/v1", api_key=who, max_retries=0) as client:
            with pytest.raises(openai.APIStatusError) as info:
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert info.value.status_code == 503
    assert len(mock.requests) - seen == 6
    assert list((planes.tmp / "spool").glob("worker-*.spool"))  # the settlements wait on disk

    planes.start_cp()
    events = account.events(str(key["id"]), 6, timeout=30)
    assert len({e["request_id"] for e in events}) == 6
    assert all(e["output_tokens"] == 20 and e["status"] == "ok" for e in events)
    time.sleep(1.0)  # a duplicate replay, if any, would land by now
    usage = account.key_usage(str(key["id"]))
    assert len(account.events(str(key["id"]), 6)) == 6
    assert usage["spent_micros"] == sum(int(e["cost_micros"]) for e in events)  # type: ignore[call-overload]
    assert usage["reserved_micros"] == 0


def test_worker_killed_mid_request_leaks_no_budget_and_charges_nothing(planes: Planes) -> None:
    account = planes.account()
    key = account.mint("victim", max_spend_usd="0.001")
    with ThreadPoolExecutor(1) as pool:
        stream = pool.submit(stream_all, planes.base, str(key["secret"]), 50)
        deadline = time.monotonic() + 10
        while account.key_usage(str(key["id"]))["reserved_micros"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        planes.kill_dp()
        with pytest.raises(openai.APIError):
            stream.result(timeout=30)
    held = account.key_usage  # read through a fresh data plane: the old one is dead
    planes.start_dp()
    deadline = time.monotonic() + 20  # lease 2 s + the control plane's 5 s sweep
    while held(str(key["id"]))["reserved_micros"] != 0:
        assert time.monotonic() < deadline, "the dead worker's reservation never came back"
        time.sleep(0.2)
    usage = held(str(key["id"]))
    assert usage["spent_micros"] == 0 and usage["events"] == []
    assert stream_all(planes.base, str(key["secret"]), 3)  # the budget is usable again

"""End-to-end fixtures: `spendgate up` as a real process (control plane on
SQLite + Hypercorn workers) in front of the mock upstream, driven over real
HTTP by the official SDKs."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

from clients.client import ControlPlaneClient
from fakeupstream.server import MockUpstream, running_mock
from tests.support import SPENDGATE, free_port

# Every secret minted in this run: none may ever show up in a log or in the database.
MINTED_SECRETS: list[str] = []
UPSTREAM_OPENAI_KEY = "sk-upstream-openai-" + uuid.uuid4().hex
UPSTREAM_ANTHROPIC_KEY = "sk-ant-upstream-" + uuid.uuid4().hex
UPSTREAM_GOOGLE_KEY = "AIza-upstream-" + uuid.uuid4().hex
UPSTREAM_ELEVENLABS_KEY = "sk_upstream_elevenlabs_" + uuid.uuid4().hex
UPSTREAM_DEEPGRAM_KEY = "upstream-deepgram-" + uuid.uuid4().hex
# The OpenAI-compatible providers, each served by the mock under its own path prefix.
COMPATIBLE = ("xai", "qwen", "moonshot", "minimax", "deepseek", "mistral", "cerebras")
UPSTREAM_KEYS = {provider: f"sk-upstream-{provider}-{uuid.uuid4().hex}" for provider in COMPATIBLE}


@dataclass
class Running:
    base: str  # http://127.0.0.1:PORT
    grpc: str
    data_dir: Path
    proc: subprocess.Popen[str]

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    @property
    def service_token(self) -> str:
        return (self.data_dir / "service-token").read_text().strip()


def start_up(
    data_dir: Path,
    env: dict[str, str],
    workers: int = 2,
    extra: tuple[str, ...] = (),
    log: IO[str] | None = None,  # where its output goes (read as it runs), else a pipe read by stop_up
) -> Running:
    http_port, grpc_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            SPENDGATE,
            "up",
            "--data-dir",
            str(data_dir),
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
            "--workers",
            str(workers),
            *extra,
        ],
        env={**os.environ, "SPENDGATE_ADMIN_TOKEN": "", "SPENDGATE_SERVICE_TOKEN": "", **env},
        stdout=log or subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Running(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", data_dir, proc)
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=1) as poll:  # one client: each new one builds an SSL context (~20 ms of CPU)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"spendgate up exited early:\n{proc.stdout.read() if proc.stdout else ''}")
            try:
                if poll.get(running.base + "/healthz").status_code == 200:
                    return running
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    proc.kill()
    raise TimeoutError("spendgate up did not become healthy")


def stop_up(running: Running) -> str:
    running.proc.terminate()
    try:
        out, _ = running.proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        running.proc.kill()
        out, _ = running.proc.communicate()
    return out or ""


def upstream_env(mock: MockUpstream) -> dict[str, str]:
    env = {
        "SPENDGATE_OPENAI_BASE_URL": mock.url + "/v1",
        "SPENDGATE_ANTHROPIC_BASE_URL": mock.url,
        "SPENDGATE_GOOGLE_BASE_URL": mock.url,
        "SPENDGATE_OPENAI_API_KEY": UPSTREAM_OPENAI_KEY,
        "SPENDGATE_ANTHROPIC_API_KEY": UPSTREAM_ANTHROPIC_KEY,
        "SPENDGATE_GOOGLE_API_KEY": UPSTREAM_GOOGLE_KEY,
        "SPENDGATE_ELEVENLABS_BASE_URL": mock.url,
        "SPENDGATE_ELEVENLABS_API_KEY": UPSTREAM_ELEVENLABS_KEY,
        "SPENDGATE_DEEPGRAM_BASE_URL": mock.url,
        "SPENDGATE_DEEPGRAM_API_KEY": UPSTREAM_DEEPGRAM_KEY,
    }
    for provider, key in UPSTREAM_KEYS.items():
        env[f"SPENDGATE_{provider.upper()}_BASE_URL"] = f"{mock.url}/{provider}/v1"
        env[f"SPENDGATE_{provider.upper()}_API_KEY"] = key
    return env


@pytest.fixture(scope="session")
def mock() -> Iterator[MockUpstream]:
    with running_mock() as server:
        yield server


@pytest.fixture(scope="session")
def gateway(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    # The tests' webhook receivers listen on loopback, which webhooks may not reach by default.
    env = {**upstream_env(mock), "SPENDGATE_WEBHOOK_ALLOW_PRIVATE": "1"}
    running = start_up(tmp_path_factory.mktemp("up") / "data", env, workers=2)
    yield running
    output = stop_up(running)
    assert running.proc.returncode == 0, output
    assert "spendgate stopped" in output
    # Secrets never appear in logs or at rest (only their SHA-256 is stored).
    stored = b"".join(p.read_bytes() for p in running.data_dir.rglob("*") if p.is_file())
    assert MINTED_SECRETS
    for secret in MINTED_SECRETS:
        assert secret not in output
        assert secret.encode() not in stored


@dataclass
class Account:
    id: str
    master_key: str
    gateway: Running

    def mint(self, name: str = "user", **fields: object) -> dict[str, object]:
        """POST /v1/keys exactly as the brief does it."""
        response = httpx.post(
            self.gateway.base + "/v1/keys",
            headers={"Authorization": f"Bearer {self.master_key}"},
            json={"name": name, "scope": "standard", **fields},
        )
        assert response.status_code == 201, response.text
        MINTED_SECRETS.append(response.json()["secret"])
        return dict(response.json())

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.gateway.base + path, headers={"Authorization": f"Bearer {self.master_key}"})

    def events(self, key_id: str, count: int, timeout: float = 10) -> list[dict[str, object]]:
        """The key's usage events once `count` have been settled (settlement is asynchronous)."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.get(f"/v1/keys/{key_id}/usage?limit=1000")
            if response.status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.1)  # the control plane is coming back
                continue
            body = response.json()
            if len(body["events"]) >= count or time.monotonic() > deadline:
                assert len(body["events"]) == count, body
                return list(body["events"])
            time.sleep(0.05)

    def key_usage(self, key_id: str) -> dict[str, object]:
        return dict(self.get(f"/v1/keys/{key_id}/usage").json())


@pytest.fixture
def new_account(gateway: Running) -> Callable[..., Account]:
    def make(credit_micros: int = 100_000_000) -> Account:
        with ControlPlaneClient(gateway.grpc, gateway.admin_token) as admin:
            created = admin.create_account("e2e-" + uuid.uuid4().hex[:6], credit_micros)
        MINTED_SECRETS.append(created.master_key_secret)
        return Account(created.account.id, created.master_key_secret, gateway)

    return make


@pytest.fixture
def account(new_account: Callable[..., Account]) -> Account:
    return new_account()


@pytest.fixture
def user_key(account: Account) -> dict[str, object]:
    return account.mint("user_1", max_spend_usd=5)

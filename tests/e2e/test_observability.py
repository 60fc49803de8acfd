"""Observability as an operator sees it, on a `spendgate up` of its own (two workers,
`--log-format json --access-log --metrics-port`): one scrape of the data plane's
/metrics sums what every worker counted, refusals are counted by reason, the control
plane's /metrics answers on its own port, and each JSON log line parses and carries
the request id its client got back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from clients.client import ControlPlaneClient, SpendgateRpcError
from fakeupstream.server import MockUpstream
from tests.e2e.conftest import (
    MINTED_SECRETS,
    UPSTREAM_OPENAI_KEY,
    Account,
    Running,
    start_up,
    stop_up,
    upstream_env,
)
from tests.support import free_port

CHAT = "/v1/chat/completions"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
# What the command itself prints (not log lines).
PRINTED = ("spendgate is up:", "admin token:", "next:", "spendgate stopped")


@dataclass
class Observed:
    running: Running
    account: Account
    metrics_dir: Path  # the workers' PROMETHEUS_MULTIPROC_DIR
    log: Path  # everything the process wrote
    controlplane_metrics: str


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(of: Samples, name: str, **labels: str) -> float:
    return of.get((name, frozenset(labels.items())), 0.0)


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


@pytest.fixture(scope="module")
def observed(mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    base = tmp_path_factory.mktemp("observed")
    metrics_dir = base / "metrics"
    _stale_counter(metrics_dir)  # an earlier run's: the launcher must empty the directory first
    log = base / "up.log"
    port = free_port()
    env = {**upstream_env(mock), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    extra = ("--log-format", "json", "--access-log", "--metrics-port", str(port))
    with log.open("w") as out:
        running = start_up(base / "data", env, workers=2, extra=extra, log=out)
        try:
            with ControlPlaneClient(running.grpc, running.admin_token) as admin:
                created = admin.create_account("observed-" + uuid.uuid4().hex[:6], 100_000_000)
            MINTED_SECRETS.append(created.master_key_secret)
            account = Account(created.account.id, created.master_key_secret, running)
            yield Observed(running, account, metrics_dir, log, f"http://127.0.0.1:{port}/metrics")
        finally:
            stop_up(running)
    assert running.proc.returncode == 0, log.read_text()
    # No worker's live gauges outlast the launcher (each drops its own at close, the launcher any left); counters stay.
    assert not list(metrics_dir.glob("gauge_live*.db"))
    assert list(metrics_dir.glob("counter_*.db"))


def _stale_counter(directory: Path) -> None:
    directory.mkdir()
    code = (
        "from prometheus_client import Counter\n"
        "Counter('spendgate_requests', '', ('provider', 'route', 'status_class'))"
        f".labels('openai', {CHAT!r}, '2xx').inc(1000)\n"
    )
    subprocess.run([sys.executable, "-c", code], env={"PROMETHEUS_MULTIPROC_DIR": str(directory)}, check=True)
    assert list(directory.glob("counter_*.db"))


def per_worker(metrics_dir: Path, tmp: Path) -> dict[str, float]:
    """Each worker's own count of 2xx chat completions from OpenAI, read from its file alone."""
    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        alone = tmp / path.stem
        alone.mkdir(exist_ok=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        got = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in registry.collect()
            for s in family.samples
        }
        count = value(got, "spendgate_requests_total", provider="openai", route=CHAT, status_class="2xx")
        if count:
            counts[path.stem] = count
    return counts


def chat(base: str, secret: str, **options: Any) -> Any:
    """One completion on a connection of its own (so that the workers share the load)."""
    with openai.OpenAI(base_url=base + "/v1", api_key=secret, max_retries=0) as client:
        return client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5, **options
        )


def test_one_scrape_sums_what_every_worker_counted(observed: Observed, tmp_path: Path) -> None:
    gateway, account = observed.running, observed.account
    before = scrape(gateway.base + "/metrics")
    assert value(before, "spendgate_requests_total", provider="openai", route=CHAT, status_class="2xx") == 0
    controlplane_before = scrape(observed.controlplane_metrics)
    key = account.mint("metered")
    secret = str(key["secret"])
    sent = 0
    with ThreadPoolExecutor(16) as pool:
        for _ in range(5):  # until both workers have served some (the kernel picks who accepts)
            list(pool.map(lambda _: chat(gateway.base, secret), range(16)))
            sent += 16
            if len(per_worker(observed.metrics_dir, tmp_path)) >= 2:
                break
    workers = per_worker(observed.metrics_dir, tmp_path)
    assert len(workers) == 2, workers
    account.events(str(key["id"]), sent)  # every settlement has landed

    after = scrape(gateway.base + "/metrics")
    total = value(after, "spendgate_requests_total", provider="openai", route=CHAT, status_class="2xx")
    assert total == sent == sum(workers.values())
    assert value(after, "spendgate_upstream_latency_seconds_count", provider="openai") == sent
    assert value(after, "spendgate_upstream_latency_seconds_sum", provider="openai") > 0
    # Both planes saw the same Reserve round trips (a key grown busy is admitted against a grant).
    reserves = value(after, "spendgate_reserve_duration_seconds_count")
    controlplane = scrape(observed.controlplane_metrics)
    rpc = {"service": "spendgate.v1.UsageService", "method": "Reserve"}
    assert reserves == value(controlplane, "spendgate_controlplane_rpcs_total", **rpc, code="OK") > 0
    assert reserves == value(controlplane, "spendgate_controlplane_rpc_duration_seconds_count", **rpc)
    settled = value(controlplane, "spendgate_settlements_total", result="settled") - value(
        controlplane_before, "spendgate_settlements_total", result="settled"
    )
    assert settled == sent
    for gauge in ("spendgate_settle_queue_depth", "spendgate_spool_backlog", "spendgate_dead_letters"):
        assert (gauge, frozenset()) in after, gauge


def test_refusals_are_counted_by_reason(observed: Observed) -> None:
    gateway = observed.running
    capped = observed.account.mint("capped", max_spend_usd=0)
    with ControlPlaneClient(gateway.grpc, gateway.admin_token) as admin:
        broke = admin.create_account("broke-" + uuid.uuid4().hex[:6], 0)
    MINTED_SECRETS.append(broke.master_key_secret)
    unfunded = Account(broke.account.id, broke.master_key_secret, gateway).mint("unfunded")
    before, controlplane_before = scrape(gateway.base + "/metrics"), scrape(observed.controlplane_metrics)

    for secret, status in ((capped["secret"], 402), (unfunded["secret"], 402), ("sg_live_nope", 401)):
        with pytest.raises(openai.APIStatusError) as refused:
            chat(gateway.base, str(secret))
        assert refused.value.status_code == status

    after, controlplane = scrape(gateway.base + "/metrics"), scrape(observed.controlplane_metrics)

    def more(of: tuple[Samples, Samples], name: str, **labels: str) -> float:
        return value(of[1], name, **labels) - value(of[0], name, **labels)

    for reason in ("key_cap", "wallet", "unauthorized"):
        assert more((before, after), "spendgate_refusals_total", reason=reason) == 1, reason
        assert more((controlplane_before, controlplane), "spendgate_reservations_total", result=reason) == (
            reason != "unauthorized"
        )
    requests = "spendgate_requests_total"
    assert more((before, after), requests, provider="openai", route=CHAT, status_class="4xx") == 2
    assert more((before, after), requests, provider="none", route=CHAT, status_class="4xx") == 1  # no key


def test_429s_are_counted_as_rate_limit_refusals(observed: Observed) -> None:
    key = observed.account.mint("limited", rpm_limit=1)
    before = scrape(observed.running.base + "/metrics")
    chat(observed.running.base, str(key["secret"]))
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            chat(observed.running.base, str(key["secret"]))
    after = scrape(observed.running.base + "/metrics")
    name = "spendgate_refusals_total"
    assert value(after, name, reason="rate_limit") - value(before, name, reason="rate_limit") == 2


def test_json_log_lines_carry_the_request_id_the_client_got_back(observed: Observed) -> None:
    key = observed.account.mint("logged")
    raw = chat(observed.running.base, str(key["secret"]))
    request_id = raw.headers["x-spendgate-request-id"]
    deadline = time.monotonic() + 10
    while request_id not in observed.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)

    text = observed.log.read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith(PRINTED)]
    records = [json.loads(line) for line in lines]  # every line the process logged is one JSON object
    assert {"controlplane.server", "spendgate.access"} <= {r["logger"] for r in records}
    for record in records:
        assert {"ts", "level", "logger", "message"} <= record.keys() and record["ts"].endswith("Z")
    (access,) = [r for r in records if r.get("request_id") == request_id]
    assert access["logger"] == "spendgate.access" and access["level"] == "INFO"
    assert (access["method"], access["path"], access["route"], access["status"]) == ("POST", CHAT, CHAT, 200)
    assert (access["key_id"], access["provider"], access["model"]) == (key["id"], "openai", "gpt-4o-mini")
    assert access["latency_ms"] >= access["upstream_ms"] > 0
    assert str(key["secret"]) not in text and UPSTREAM_OPENAI_KEY not in text


def test_the_control_plane_serves_its_own_metrics(observed: Observed) -> None:
    gateway = observed.running
    before = scrape(observed.controlplane_metrics)
    with ControlPlaneClient(gateway.grpc, "not-a-token") as stranger, pytest.raises(SpendgateRpcError):
        stranger.create_account("nobody")
    after = scrape(observed.controlplane_metrics)
    refused = {"service": "spendgate.v1.AdminService", "method": "CreateAccount", "code": "UNAUTHENTICATED"}
    assert value(after, "spendgate_controlplane_rpcs_total", **refused) == (
        value(before, "spendgate_controlplane_rpcs_total", **refused) + 1
    )
    assert ("spendgate_reservations_active", frozenset()) in after
    for status in ("pending", "dead"):
        assert value(after, "spendgate_webhook_outbox_events", status=status) == 0
    assert value(after, "process_cpu_seconds_total") > 0
    # The data plane's port is not where the control plane's metrics are, and the other way round.
    assert not any(name.startswith("spendgate_controlplane") for name, _ in scrape(gateway.base + "/metrics"))


def test_expired_and_revoked_keys_are_counted_by_their_own_reason(observed: Observed) -> None:
    """The workers' key caches refuse these before any Reserve: the reason must still be theirs."""
    account, base = observed.account, observed.running.base
    expires = time.time_ns() // 1_000_000 + 1_500
    trial = account.mint("trial", expires_at_ms=expires)
    revoked = account.mint("revoked")
    for key in (trial, revoked):
        chat(base, str(key["secret"]))  # cached by the worker that answered
    response = httpx.delete(
        f"{base}/v1/keys/{revoked['id']}", headers={"Authorization": f"Bearer {account.master_key}"}
    )
    assert response.status_code == 200, response.text
    time.sleep(max(0.0, (expires - time.time_ns() // 1_000_000) / 1000 + 0.01))
    before = scrape(base + "/metrics")
    for key in (trial, revoked):
        for _ in range(2):
            with pytest.raises(openai.AuthenticationError):
                chat(base, str(key["secret"]))
    after = scrape(base + "/metrics")
    name = "spendgate_refusals_total"
    for reason, count in (("key_expired", 2), ("key_revoked", 2), ("unauthorized", 0)):
        assert value(after, name, reason=reason) - value(before, name, reason=reason) == count, reason


def test_a_providers_own_4xx_is_not_counted_as_the_gateways_refusal(observed: Observed) -> None:
    """A 429 or 401 the provider sent (the operator's quota or upstream key) passes through
    to the client; the gateway refused nothing, so no refusal reason may count it."""
    key = observed.account.mint("passthrough")
    base = observed.running.base
    before = scrape(base + "/metrics")
    for status, error in ((429, openai.RateLimitError), (401, openai.AuthenticationError)):
        with pytest.raises(error):
            chat(base, str(key["secret"]), extra_headers={"x-mock-status": str(status)})
    after = scrape(base + "/metrics")
    for reason in ("rate_limit", "unauthorized", "key_cap", "forbidden"):
        name = "spendgate_refusals_total"
        assert value(after, name, reason=reason) == value(before, name, reason=reason), reason
    requests = "spendgate_requests_total"
    more = value(after, requests, provider="openai", route=CHAT, status_class="4xx") - value(
        before, requests, provider="openai", route=CHAT, status_class="4xx"
    )
    assert more == 2  # still counted as the answers they were


def test_no_secret_reaches_the_json_log_through_rotation_refusals_or_a_query_key(observed: Observed) -> None:
    account, base = observed.account, observed.running.base
    headers = {"Authorization": f"Bearer {account.master_key}"}
    key = account.mint("rotating")
    old = str(key["secret"])
    chat(base, old)
    rotated = httpx.post(f"{base}/v1/keys/{key['id']}/rotate", headers=headers, json={"grace_ms": 0})
    assert rotated.status_code == 201, rotated.text
    new = str(rotated.json()["secret"])
    MINTED_SECRETS.append(new)
    deadline = time.monotonic() + 5
    while True:  # rotated out at once: refused as soon as the change reached the worker
        try:
            chat(base, old)
        except openai.AuthenticationError:
            break
        assert time.monotonic() < deadline, "the rotated-out secret kept working"
    gemini = f"{base}/v1beta/models/gemini-2.5-flash:generateContent?key={new}"
    answered = httpx.post(gemini, json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert answered.status_code == 200, answered.text
    request_id = answered.headers["x-spendgate-request-id"]
    deadline = time.monotonic() + 10
    while request_id not in observed.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = observed.log.read_text()
    assert request_id in text  # its access line was written
    for secret in (old, new, account.master_key):
        assert secret not in text

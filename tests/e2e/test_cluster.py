"""Scale-out on one machine: two control planes on one PostgreSQL, two data
planes with two Hypercorn workers each, traffic spread over all of them."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from clients.client import ControlPlaneClient
from controlplane.store.db import normalize_url
from fakeupstream.server import MockUpstream
from spendgate.v1 import keys_pb2
from tests.e2e.conftest import MINTED_SECRETS, upstream_env
from tests.support import SPENDGATE, free_port, start_controlplane, stop

pytestmark = pytest.mark.postgres

KEYS, REQUESTS, CAP = 20, 200, 150  # micros per key: about four requests fit
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "cluster"}], "max_tokens": 40}
ESTIMATE = -(-(len(str(BODY)) * 2 * 150_000 + 40 * 600_000) // 1_000_000)  # generous bound of one request


@dataclass
class Cluster:
    cps: list[str]
    dps: list[str]
    admin_token: str
    db_url: str
    cp_procs: list[subprocess.Popen[str]]
    env: dict[str, str]
    tmp: Path

    def restart_cp(self, i: int, down_while: Callable[[], object]) -> None:
        """Kill control plane i, run `down_while`, start it again on the same port."""
        self.cp_procs[i].send_signal(signal.SIGKILL)
        self.cp_procs[i].communicate(timeout=10)
        down_while()
        port = int(self.cps[i].rsplit(":", 1)[1])
        self.cp_procs[i], _ = start_controlplane(
            self.tmp / f"cp{i}", ["--db", self.db_url], self.env, port=port
        )


def wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


@pytest.fixture
def cluster(pg_database: str, mock: MockUpstream, tmp_path: Path) -> Iterator[Cluster]:
    env = {
        **upstream_env(mock),
        "SPENDGATE_ADMIN_TOKEN": "admin-" + uuid.uuid4().hex,
        "SPENDGATE_SERVICE_TOKEN": "svc-" + uuid.uuid4().hex,
    }
    cps = [start_controlplane(tmp_path / f"cp{i}", ["--db", pg_database], env) for i in range(2)]
    dps = []
    logs = [open(tmp_path / f"dp{i}.log", "w") for i in range(2)]  # noqa: SIM115
    for i in range(2):
        port = free_port()
        proc = subprocess.Popen(
            [
                SPENDGATE,
                "dataplane",
                "--controlplane",
                cps[i][1],
                "--http-port",
                str(port),
                "--workers",
                "2",
                "--spool-dir",
                str(tmp_path / f"spool{i}"),
            ],
            env={**os.environ, **env},
            stdout=logs[i],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        dps.append((proc, f"http://127.0.0.1:{port}"))
    for _, url in dps:
        wait_healthy(url)
    cluster = Cluster(
        [a for _, a in cps],
        [u for _, u in dps],
        env["SPENDGATE_ADMIN_TOKEN"],
        pg_database,
        [p for p, _ in cps],
        env,
        tmp_path,
    )
    yield cluster
    for proc, _ in dps:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    for cp_proc in cluster.cp_procs:
        stop(cp_proc)
    for log in logs:
        log.close()


LEDGER_CHECK = text(
    """
    SELECT k.id, k.spent_micros, k.reserved_micros,
           COALESCE((SELECT SUM(e.cost_micros) FROM usage_events e WHERE e.key_id = k.id), 0) AS settled,
           COALESCE((SELECT SUM(r.amount_micros) FROM reservations r
                     WHERE r.key_id = k.id AND r.state = 'active'), 0) AS live
    FROM keys k WHERE k.scope = 'standard'
    """
)


def test_caps_hold_and_the_ledger_balances_under_load(cluster: Cluster) -> None:
    with ControlPlaneClient(cluster.cps[0], cluster.admin_token) as admin:
        created = admin.create_account("cluster", 1_000_000_000)
    MINTED_SECRETS.append(created.master_key_secret)
    with ControlPlaneClient(cluster.cps[1], created.master_key_secret) as master:
        keys = [master.create_key(f"user_{i}", cap_micros=CAP) for i in range(KEYS)]

    engine = create_engine(normalize_url(cluster.db_url))
    samples, mismatches = 0, []
    stop_sampling = threading.Event()

    def checker() -> None:
        nonlocal samples
        while not stop_sampling.is_set():
            with engine.connect() as conn:
                conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                for row in conn.execute(LEDGER_CHECK):
                    if row.spent_micros + row.reserved_micros != row.settled + row.live:
                        mismatches.append(tuple(row))
            samples += 1
            time.sleep(0.02)

    sampler = threading.Thread(target=checker, daemon=True)
    sampler.start()

    def one(i: int) -> int:
        key, secret = keys[i % KEYS]
        base = random.choice(cluster.dps)
        headers = {"Authorization": f"Bearer {secret}", "x-mock-delay-ms": "50", "x-mock-output-tokens": "40"}
        return httpx.post(base + "/v1/chat/completions", json=BODY, headers=headers, timeout=60).status_code

    try:
        with ThreadPoolExecutor(200) as pool:
            statuses = list(pool.map(one, range(REQUESTS)))
        # 503 is the fail-closed answer when a control plane cannot answer in time (an
        # overloaded machine); it is allowed, but caps and the ledger must hold regardless.
        assert set(statuses) <= {200, 402, 503}, statuses
        assert statuses.count(200) and statuses.count(402) and statuses.count(503) < REQUESTS // 4
        rows, events, settled_total = wait_settled(engine, statuses.count(200))
    finally:
        stop_sampling.set()
        sampler.join(10)
        engine.dispose()
    print(
        f"cluster: {statuses.count(200)} admitted / {statuses.count(402)} refused / {statuses.count(503)} failed closed; "
        f"{samples} ledger samples, settled {settled_total} micros"
    )
    assert samples > 10 and mismatches == []
    assert events == statuses.count(200)
    for row in rows:
        assert row.reserved_micros == 0
        assert row.spent_micros <= CAP + ESTIMATE, row  # never more than one request's estimate over


def wait_settled(engine: Any, admitted: int) -> tuple[list[Any], int, int]:
    """Settlements are asynchronous: wait until every admitted request has its event."""

    deadline = time.monotonic() + 20
    while True:
        with engine.connect() as conn:
            rows = list(conn.execute(LEDGER_CHECK))
            events = conn.execute(text("SELECT COUNT(*) FROM usage_events")).scalar_one()
        if (events == admitted and sum(r.live for r in rows) == 0) or time.monotonic() > deadline:
            return rows, events, sum(r.settled for r in rows)
        time.sleep(0.1)


def test_revocation_and_cap_changes_reach_every_worker_of_every_data_plane(cluster: Cluster) -> None:
    with ControlPlaneClient(cluster.cps[0], cluster.admin_token) as admin:
        created = admin.create_account("propagation", 1_000_000_000)
    master = ControlPlaneClient(cluster.cps[1], created.master_key_secret)
    revokee, revoke_secret = master.create_key("to-revoke")
    capped, capped_secret = master.create_key("to-cap", cap_micros=1_000_000)
    MINTED_SECRETS.extend([created.master_key_secret, revoke_secret, capped_secret])

    def status(secret: str, base: str) -> int:
        body = {**BODY, "max_tokens": 1}
        return httpx.post(
            base + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}
        ).status_code

    def all_workers(secret: str) -> set[int]:  # fresh connections land on every worker of both planes
        with ThreadPoolExecutor(16) as pool:
            return set(pool.map(lambda i: status(secret, cluster.dps[i % 2]), range(32)))

    assert all_workers(revoke_secret) == {200} and all_workers(capped_secret) == {200}
    with ControlPlaneClient(cluster.cps[0], created.master_key_secret) as other_plane:
        started = time.monotonic()
        other_plane.revoke_key(revokee.id)
        other_plane.update_key(capped.id, cap_micros=0)
    while True:
        elapsed = time.monotonic() - started  # when the sweep over all workers began
        if all_workers(revoke_secret) == {401}:
            break
        assert elapsed < 1.0, "a worker still served the revoked key after 1 s"
    assert all_workers(capped_secret) == {402}
    print(
        f"revocation refused on all 4 workers {1000 * elapsed:.0f} ms after the change (checked over 32 fresh connections)"
    )
    master.close()


def test_a_data_plane_that_lost_its_watch_stream_resynchronises(cluster: Cluster) -> None:
    """Data plane 0 watches control plane 0. While that one is down, the key is
    revoked through control plane 1; when control plane 0 returns, the data
    plane's stream resumes where it left off and the cached key stops working —
    even on a route that never asks the control plane (GET /v1/models)."""
    with ControlPlaneClient(cluster.cps[1], cluster.admin_token) as admin:
        created = admin.create_account("resync", 1_000_000)
    with ControlPlaneClient(cluster.cps[1], created.master_key_secret) as master:
        key, secret = master.create_key("cached")
        MINTED_SECRETS.extend([created.master_key_secret, secret])
        headers = {"Authorization": f"Bearer {secret}"}

        def models_status() -> set[int]:
            with ThreadPoolExecutor(8) as pool:  # fresh connections: both workers of data plane 0
                return set(
                    pool.map(
                        lambda _: httpx.get(cluster.dps[0] + "/v1/models", headers=headers).status_code,
                        range(16),
                    )
                )

        assert models_status() == {200}  # cached in the workers
        cluster.restart_cp(0, down_while=lambda: master.revoke_key(key.id))
    started = time.monotonic()
    while models_status() != {401}:
        assert time.monotonic() - started < 10, "the revocation never reached data plane 0"
        time.sleep(0.1)
    print(
        f"data plane resynchronised {1000 * (time.monotonic() - started):.0f} ms after its control plane returned"
    )


def test_a_rate_limit_is_one_count_for_every_worker_of_every_data_plane(cluster: Cluster) -> None:
    """An rpm of 8, 24 requests spread over the four workers of two data planes (each on its
    own control plane, one database): 8 admitted, and the rest get 429s."""
    with ControlPlaneClient(cluster.cps[0], cluster.admin_token) as admin:
        created = admin.create_account("rate", 1_000_000_000)
    with ControlPlaneClient(cluster.cps[1], created.master_key_secret) as master:
        _, secret = master.create_key("limited", rate_limits=keys_pb2.RateLimits(rpm_limit=8))
    MINTED_SECRETS.extend([created.master_key_secret, secret])

    def status(i: int) -> int:
        headers = {"Authorization": f"Bearer {secret}"}
        return httpx.post(cluster.dps[i % 2] + "/v1/chat/completions", json=BODY, headers=headers).status_code

    began = time.monotonic()
    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(status, range(24)))
    elapsed = time.monotonic() - began
    assert set(statuses) == {200, 429}
    assert 8 <= statuses.count(200) <= 8 + int(elapsed / 7.5)  # it refills one every 7.5 s

"""Two control-plane processes on one PostgreSQL keep caps exact."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from clients.client import ControlPlaneClient
from spendgate.v1 import keys_pb2
from tests.support import start_controlplane, stop

pytestmark = pytest.mark.postgres

ESTIMATE = 250
CAP = 3_000


def test_caps_hold_across_two_control_planes(pg_database: str, tmp_path: Path) -> None:
    env = {
        "SPENDGATE_ADMIN_TOKEN": "admin-" + uuid.uuid4().hex,
        "SPENDGATE_SERVICE_TOKEN": "svc-" + uuid.uuid4().hex,
    }
    a, addr_a = start_controlplane(tmp_path / "a", ["--db", pg_database], env)
    b, addr_b = start_controlplane(tmp_path / "b", ["--db", pg_database], env)
    try:
        with ControlPlaneClient(addr_a, env["SPENDGATE_ADMIN_TOKEN"]) as admin:
            created = admin.create_account("two-planes", 100_000_000)
        master = ControlPlaneClient(addr_b, created.master_key_secret)
        keys = [master.create_key(f"user_{i}", cap_micros=CAP)[0] for i in range(5)]
        services = [ControlPlaneClient(addr, env["SPENDGATE_SERVICE_TOKEN"]) for addr in (addr_a, addr_b)]

        # A watcher on plane B sees a revocation made through plane A.
        watch = services[1].watch_keys()
        assert next(watch).kind == keys_pb2.KEY_CHANGE_KIND_SYNC
        seen = threading.Event()

        def consume() -> None:
            try:
                for change in watch:
                    if change.kind == keys_pb2.KEY_CHANGE_KIND_REVOKED:
                        seen.set()
            except grpc.RpcError:
                pass

        threading.Thread(target=consume, daemon=True).start()

        def attempt(i: int) -> bool:
            return services[i % 2].reserve(keys[i % len(keys)].id, uuid.uuid4().hex, ESTIMATE).granted

        with ThreadPoolExecutor(max_workers=32) as pool:
            granted = list(pool.map(attempt, range(400)))
        # remaining > 0 admits ceil(3000 / 250) = 12 per key, whichever plane asked.
        assert granted.count(True) == 12 * len(keys)
        for key in keys:
            got = master.get_key(key.id)
            assert got.reserved_micros == 12 * ESTIMATE <= CAP + ESTIMATE

        other = ControlPlaneClient(addr_a, created.master_key_secret)
        started = time.monotonic()
        other.revoke_key(keys[0].id)
        assert seen.wait(5)
        print(f"revocation crossed control planes in {1000 * (time.monotonic() - started):.0f} ms")
        assert time.monotonic() - started < 1.0
        watch.cancel()
        for client in (master, other, *services):
            client.close()
    finally:
        stop(a)
        stop(b)

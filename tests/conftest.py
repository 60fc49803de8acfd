"""Shared fixtures: a real control plane on loopback gRPC, over SQLite and
over the PostgreSQL server (a fresh database per test)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from clients.client import ControlPlaneClient
from controlplane.server import Config, ControlPlane

PG_URL = os.environ.get("SPENDGATE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


class FakeClock:
    """Real time plus an offset that tests can advance."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def advance(self, ms: int) -> None:
        self.offset_ms += ms


def _pg_available() -> str | None:
    try:
        with psycopg.connect(PG_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {PG_URL} ({exc.__class__.__name__}); set SPENDGATE_TEST_PG_URL"


_PG_PROBLEM = _pg_available()


def _drop_database(name: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _dropper() -> Iterator[ThreadPoolExecutor]:
    """Drops finished tests' databases in the background (a drop takes up to a
    second); the session waits for the last ones."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-drop") as pool:
        yield pool


@pytest.fixture
def pg_database(_dropper: ThreadPoolExecutor) -> Iterator[str]:
    """A fresh, empty PostgreSQL database; dropped afterwards."""
    if _PG_PROBLEM:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {_PG_PROBLEM}")
        pytest.skip(_PG_PROBLEM)
    name = f"sg_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        _dropper.submit(_drop_database, name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'spendgate.db'}"
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_plane(tmp_path: Path, clock: FakeClock) -> Iterator[Callable[..., ControlPlane]]:
    planes: list[ControlPlane] = []

    def make(db_url: str, **overrides: object) -> ControlPlane:
        config = Config(data_dir=tmp_path / f"data{len(planes)}", db_url=db_url, grpc_port=0, **overrides)  # type: ignore[arg-type]
        plane = ControlPlane(config, clock=clock)
        plane.start()
        planes.append(plane)
        return plane

    yield make
    for plane in planes:
        plane.stop(grace=0)


@pytest.fixture
def plane(make_plane: Callable[..., ControlPlane], db_url: str) -> ControlPlane:
    return make_plane(db_url)


@pytest.fixture
def admin(plane: ControlPlane) -> Iterator[ControlPlaneClient]:
    with ControlPlaneClient(plane.address, plane.tokens.admin) as client:
        yield client


@pytest.fixture
def service(plane: ControlPlane) -> Iterator[ControlPlaneClient]:
    with ControlPlaneClient(plane.address, plane.tokens.service) as client:
        yield client


@pytest.fixture
def new_account(
    plane: ControlPlane, admin: ControlPlaneClient
) -> Iterator[Callable[..., ControlPlaneClient]]:
    """Factory: create an account and return a client holding its master key."""
    clients: list[ControlPlaneClient] = []

    def make(name: str = "acme", credit_micros: int = 100_000_000) -> ControlPlaneClient:
        created = admin.create_account(name, credit_micros)
        client = ControlPlaneClient(plane.address, created.master_key_secret)
        client.account_id = created.account.id  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def master(new_account: Callable[..., ControlPlaneClient]) -> ControlPlaneClient:
    return new_account()

"""Shared fixtures: a real control plane on loopback gRPC, over SQLite and
over the PostgreSQL server (a fresh database per test)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
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
from controlplane.store import db

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


def _new_database(template: str | None = None) -> str:
    name = f"sg_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return name


def _url_of(name: str) -> str:
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def _require_pg() -> None:
    if _PG_PROBLEM:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {_PG_PROBLEM}")
        pytest.skip(_PG_PROBLEM)


@pytest.fixture(scope="session")
def _pg_template(_dropper: ThreadPoolExecutor) -> Iterator[str]:
    """A database migrated to head once per session: a test's copy of it costs a
    file copy instead of every migration."""
    name = _new_database()
    engine = db.make_engine(_url_of(name))
    db.migrate(engine)
    engine.dispose()
    yield name
    _dropper.submit(_drop_database, name)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schema") / "spendgate.db"
    engine = db.make_engine(f"sqlite:///{path}")
    db.migrate(engine)
    engine.dispose()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the whole schema in the one file
    return path


@pytest.fixture
def pg_empty_database(_dropper: ThreadPoolExecutor) -> Iterator[str]:
    """A fresh PostgreSQL database without any schema; dropped afterwards."""
    _require_pg()
    name = _new_database()
    yield _url_of(name)
    _dropper.submit(_drop_database, name)


@pytest.fixture
def pg_database(_dropper: ThreadPoolExecutor, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL database with the current schema (what a control plane's
    first start migrates to); dropped afterwards."""
    _require_pg()
    name = _new_database(template=request.getfixturevalue("_pg_template"))
    yield _url_of(name)
    _dropper.submit(_drop_database, name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database with the current schema, on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "spendgate.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database without any schema, on each backend (for the migrations' own tests)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'spendgate.db'}"
    return str(request.getfixturevalue("pg_empty_database"))


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

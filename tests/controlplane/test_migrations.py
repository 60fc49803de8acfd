"""Migrations build the schema the code expects and upgrade a database in place."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from controlplane.store import db
from controlplane.store.schema import accounts, metadata


def test_migrated_schema_matches_the_code(db_url: str) -> None:
    engine = db.make_engine(db_url)
    db.migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    engine.dispose()


def test_upgrade_is_in_place_and_keeps_data(db_url: str) -> None:
    engine = db.make_engine(db_url)
    db.migrate(engine)
    with engine.begin() as conn:
        conn.execute(
            accounts.insert().values(
                id="acct_x", name="kept", created_ms=1, credit_micros=5, spent_micros=0, reserved_micros=0
            )
        )
    db.migrate(engine)  # already at head: a no-op that must not touch data
    with engine.connect() as conn:
        assert conn.execute(select(accounts.c.name)).scalars().all() == ["kept"]
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert version == "0001"
    assert {"accounts", "keys", "reservations", "usage_events", "prices", "key_changes"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()


def test_plain_postgresql_urls_use_psycopg3() -> None:
    assert db.normalize_url("postgresql://u@h:5432/d").startswith("postgresql+psycopg://")
    assert db.normalize_url("sqlite:///x.db") == "sqlite:///x.db"

"""Migrations build the schema the code expects and upgrade a database in place."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select, text

from controlplane.store import db
from controlplane.store.schema import accounts, metadata, prices, usage_events


def test_migrated_schema_matches_the_code(empty_db_url: str) -> None:
    engine = db.make_engine(empty_db_url)
    db.migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    engine.dispose()


def test_an_old_database_is_upgraded_in_place_and_keeps_its_data(empty_db_url: str) -> None:
    """A database left at revision 0001 (before non-token units) upgrades to head:
    its rows stay, and the new columns read as 0 / not priced."""
    engine = db.make_engine(empty_db_url)
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO accounts (id, name, created_ms, credit_micros, spent_micros, reserved_micros) "
                "VALUES ('acct_x', 'kept', 1, 5, 0, 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO usage_events (request_id, key_id, account_id, ts_ms, provider, model, input_tokens, "
                "output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, cost_micros, fee_micros, "
                "latency_ms, ttfb_ms, status, http_status, estimated) VALUES ('r1', 'k', 'acct_x', 1, 'openai', "
                "'gpt-4o-mini', 10, 5, 0, 0, 0, 3, 1, 7, 2, 'ok', 200, false)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO prices (provider, model, effective_from_ms, input_micros_per_mtok, "
                "output_micros_per_mtok, max_output_tokens, source, origin) "
                "VALUES ('openai', 'old', 1, 1, 2, 0, 'test', 'api')"
            )
        )
    db.migrate(engine)
    db.migrate(engine)  # at head: a no-op
    with engine.connect() as conn:
        assert conn.execute(select(accounts.c.name)).scalars().all() == ["kept"]
        event = conn.execute(select(usage_events)).mappings().one()
        assert (event["cost_micros"], event["characters"], event["audio_ms"], event["images"]) == (3, 0, 0, 0)
        price = conn.execute(select(prices)).mappings().one()
        assert price["input_micros_per_mtok"] == 1 and price["characters_micros_per_mchar"] is None
        assert (event["web_searches"], event["service_tier"], event["price_rules"]) == (0, "", "")
        assert price["rules"] == "[]" and price["cache_write_1h_micros_per_mtok"] is None
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert version == ScriptDirectory.from_config(config).get_current_head()
    assert version >= "0004"  # past the webhooks' outbox
    engine.dispose()


def test_plain_postgresql_urls_use_psycopg3() -> None:
    assert db.normalize_url("postgresql://u@h:5432/d").startswith("postgresql+psycopg://")
    assert db.normalize_url("sqlite:///x.db") == "sqlite:///x.db"

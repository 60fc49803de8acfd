"""The built-in catalog, --catalog merging, and effective-dated syncing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from clients.client import ControlPlaneClient
from controlplane import catalog
from controlplane.server import ControlPlane
from spendgate.v1 import usage_pb2
from tests.conftest import FakeClock


def test_builtin_catalog_covers_the_brief_models_with_every_field() -> None:
    prices = {(p.provider, p.model): p for p in catalog.builtin() if p.effective_from_ms == 0}
    for name in [("openai", "gpt-5.4"), ("anthropic", "claude-sonnet-4-6"), ("openai", "gpt-4o-mini")]:
        price = prices[name]
        assert price.input_micros_per_mtok > 0 and price.output_micros_per_mtok > 0
        assert price.cached_input_micros_per_mtok is not None and price.max_output_tokens > 0
        assert price.source
    assert prices[("anthropic", "claude-sonnet-4-6")].cache_write_micros_per_mtok == 3_750_000


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    return path


def test_catalog_file_merges_over_builtin(tmp_path: Path) -> None:
    extra = write(
        tmp_path,
        """
[[model]]
provider = "openai"
name = "gpt-4o-mini"
input_micros_per_mtok = 1
output_micros_per_mtok = 2

[[model]]
provider = "acme"
name = "house-model"
input_micros_per_mtok = 10
output_micros_per_mtok = 20
cached_input_micros_per_mtok = 5
max_output_tokens = 4096
""",
    )
    merged = {(p.provider, p.model): p for p in catalog.merged(extra)}
    assert merged[("openai", "gpt-4o-mini")].input_micros_per_mtok == 1
    assert merged[("openai", "gpt-4o-mini")].cached_input_micros_per_mtok is None
    assert merged[("acme", "house-model")].max_output_tokens == 4096
    assert ("openai", "gpt-5.4") in merged


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('[[model]]\nprovider="x"\nname="y"\ninput_micros_per_mtok=1\n', "missing output_micros_per_mtok"),
        (
            '[[model]]\nprovider="x"\nname="y"\ninput_micros_per_mtok=1.5\noutput_micros_per_mtok=1\n',
            "input_micros_per_mtok",
        ),
        (
            '[[model]]\nprovider="x"\nname="y"\ninput_micros_per_mtok=-1\noutput_micros_per_mtok=1\n',
            "non-negative",
        ),
        (
            '[[model]]\nprovider="x"\nname="y"\ninput_micros_per_mtok=1\noutput_micros_per_mtok=1\nprice=3\n',
            "unknown field",
        ),
        ("model = 3\n", "array of tables"),
        ("[[model\n", "prices.toml"),
    ],
)
def test_bad_catalog_files_say_what_is_wrong(tmp_path: Path, body: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        catalog.load_toml(write(tmp_path, body))


def test_restart_with_changed_catalog_adds_an_effective_dated_row(
    make_plane: Callable[..., ControlPlane], tmp_path: Path, db_url: str, clock: FakeClock
) -> None:
    first = make_plane(db_url)
    with ControlPlaneClient(first.address, first.tokens.admin) as admin:
        created = admin.create_account("a", 10_000_000)
    with ControlPlaneClient(first.address, created.master_key_secret) as master:
        key, _ = master.create_key("u")
    with ControlPlaneClient(first.address, first.tokens.service) as service:
        old = service.settle(
            usage_pb2.SettleRequest(
                request_id="r1",
                key_id=key.id,
                provider="openai",
                model="gpt-4o-mini",
                units=usage_pb2.Units(input_tokens=1_000_000),
            )
        ).event
        # An operator re-price through the API must survive restarts.
        clock.advance(10)
        admin_price = usage_pb2.Price(
            provider="acme", model="api-only", input_micros_per_mtok=9, output_micros_per_mtok=9
        )
        ControlPlaneClient(first.address, first.tokens.admin).upsert_price(admin_price)
    first.stop(grace=0)
    clock.advance(1000)

    unchanged = make_plane(db_url)  # same catalog: nothing added
    with unchanged.engine.connect() as conn:
        rows = catalog.listing(conn, clock(), include_history=True)
    assert sum(1 for p in rows if p.model == "gpt-4o-mini") == 1
    unchanged.stop(grace=0)
    clock.advance(1000)

    extra = write(
        tmp_path,
        '[[model]]\nprovider="openai"\nname="gpt-4o-mini"\ninput_micros_per_mtok=200000\noutput_micros_per_mtok=800000\n',
    )
    repriced = make_plane(db_url, catalog_file=extra)
    with repriced.engine.connect() as conn:
        history = [
            p for p in catalog.listing(conn, clock(), include_history=True) if p.model == "gpt-4o-mini"
        ]
        assert [p.input_micros_per_mtok for p in history] == [150_000, 200_000]
        assert catalog.lookup(conn, "acme", "api-only", clock()) is not None
    with ControlPlaneClient(repriced.address, created.master_key_secret) as master:
        events = master.list_usage_events(key.id).events
    assert [e.cost_micros for e in events] == [old.cost_micros] == [150_000]


def test_a_catalog_upgrade_keeps_api_overrides_and_stores_announced_prices_for_their_day(db_url: str) -> None:
    """A newer genai-prices (or catalog file) changes what it should: never an UpsertPrice
    row, never the past; a price announced for a later day waits for that day."""
    from controlplane.money import Price
    from controlplane.store import db

    engine = db.make_engine(db_url)
    db.migrate(engine)
    day = 86_400_000
    t0 = 1_796_083_200_000
    x1, y1 = Price("p", "x", 1, 1), Price("p", "y", 1, 1)
    assert catalog.sync(engine, [x1, y1], t0) == 2
    with engine.begin() as conn:
        catalog.insert(conn, Price("p", "x", 7, 7), t0 + 1, origin="api")  # the operator's price
    upgrade = [
        Price("p", "x", 2, 2),
        Price("p", "y", 3, 3),
        Price("p", "y", 4, 4, effective_from_ms=t0 + 30 * day),
    ]
    assert catalog.sync(engine, upgrade, t0 + day) == 2  # y now, and y's announced price
    assert catalog.sync(engine, upgrade, t0 + 2 * day) == 0
    with engine.connect() as conn:
        assert catalog.lookup(conn, "p", "x", t0 + 2 * day).input_micros_per_mtok == 7  # type: ignore[union-attr]
        assert catalog.lookup(conn, "p", "y", t0).input_micros_per_mtok == 1  # type: ignore[union-attr]
        assert catalog.lookup(conn, "p", "y", t0 + 2 * day).input_micros_per_mtok == 3  # type: ignore[union-attr]
        assert catalog.lookup(conn, "p", "y", t0 + 31 * day).input_micros_per_mtok == 4  # type: ignore[union-attr]
    revised = [*upgrade[:2], Price("p", "y", 5, 5, effective_from_ms=t0 + 30 * day)]
    assert catalog.sync(engine, revised, t0 + 3 * day) == 1  # a revised announcement replaces the old one
    with engine.connect() as conn:
        assert [p.input_micros_per_mtok for p in catalog.history(conn, "p", "y")] == [5, 3, 1]
    engine.dispose()

"""The pricing catalog: TOML files in, effective-dated rows out.

The built-in catalog ships as one TOML file per provider in catalog_data/
beside this module, each saying where its prices came from and when;
``--catalog FILE`` merges a file of the same format over it (same provider and name →
the file wins). On start the merged list is synced into the `prices` table:
a model whose price changed gets a new row effective from now, so events
already recorded keep the price they were charged."""

from __future__ import annotations

import json
import time
import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select

from controlplane import genai_catalog
from controlplane.errors import InvalidArgument
from controlplane.money import MINUTES_PER_DAY, OPTIONAL_RATES, RATES, Price, Rule
from controlplane.store.schema import prices

BUILTIN = Path(__file__).resolve().parent / "catalog_data"
LIMITS = "limits.toml"
_PRICE_FIELDS = (*RATES, "max_output_tokens")
_RULE_FIELDS = frozenset({"above_input_tokens", "window", "service_tier", *RATES})


def load_toml(path: Path) -> list[Price]:
    """Parse a catalog file; errors name the file, the entry and the field.
    Rates are micro-USD per million units: `*_per_mtok` tokens, `*_per_mchar`
    characters, `*_per_msec` seconds of audio, `*_per_mimage` images,
    `*_per_mcall` tool calls, `*_per_mrequest` requests. A `[[model.rule]]`
    table (money.Rule) sets rates that replace the row's own for requests over
    `above_input_tokens`, started in a daily UTC `window = "HH:MM-HH:MM"`, or
    run on a `service_tier`."""
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    default_source = str(doc.get("source", path.name))
    entries = doc.get("model", [])
    if not isinstance(entries, list):
        raise ValueError(f"{path}: 'model' must be an array of tables ([[model]])")
    return [_parse_entry(entry, f"{path}: model #{i + 1}", default_source) for i, entry in enumerate(entries)]


def _parse_entry(entry: Any, where: str, default_source: str) -> Price:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be a table")
    known = {"provider", "name", "source", "effective_from_ms", "rule", *_PRICE_FIELDS}
    unknown = set(entry) - known
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    for required in ("provider", "name", "input_micros_per_mtok", "output_micros_per_mtok"):
        if required not in entry:
            raise ValueError(f"{where}: missing {required}")
    for name in (*_PRICE_FIELDS, "effective_from_ms"):
        value = entry.get(name)
        if value is not None and (type(value) is not int or value < 0):
            raise ValueError(f"{where}: {name} must be a non-negative integer, got {value!r}")
    optional: dict[str, Any] = {name: entry.get(name) for name in OPTIONAL_RATES}
    price = Price(
        provider=str(entry["provider"]),
        model=str(entry["name"]),
        input_micros_per_mtok=entry["input_micros_per_mtok"],
        output_micros_per_mtok=entry["output_micros_per_mtok"],
        max_output_tokens=entry.get("max_output_tokens", 0),
        effective_from_ms=entry.get("effective_from_ms", 0),
        source=str(entry.get("source", default_source)),
        rules=tuple(
            _parse_rule(rule, f"{where}: rule #{i + 1}") for i, rule in enumerate(entry.get("rule", []))
        ),
        **optional,
    )
    validate(price)
    return price


def _parse_rule(entry: Any, where: str) -> Rule:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be a table")
    unknown = set(entry) - _RULE_FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    window = entry.get("window")
    try:
        return Rule(
            rates={name: entry[name] for name in RATES if name in entry},
            above_input_tokens=entry.get("above_input_tokens"),
            window=None if window is None else parse_window(str(window)),
            service_tier=str(entry.get("service_tier", "")),
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def parse_window(text: str) -> tuple[int, int]:
    """ "HH:MM-HH:MM" (UTC) → minutes of the day; "24:00" ends a day."""
    try:
        start, end = (int(h) * 60 + int(m) for h, m in (part.split(":") for part in text.split("-")))
    except ValueError:
        raise ValueError(f"window must be HH:MM-HH:MM (UTC), got {text!r}") from None
    if not (0 <= start < MINUTES_PER_DAY and 0 < end <= MINUTES_PER_DAY) or start == end:
        raise ValueError(f"window must be HH:MM-HH:MM (UTC) within a day, got {text!r}")
    return start, end


def rules_to_json(rules: tuple[Rule, ...]) -> str:
    return json.dumps(
        [
            {
                "rates": dict(rule.rates),
                **(
                    {"above_input_tokens": rule.above_input_tokens}
                    if rule.above_input_tokens is not None
                    else {}
                ),
                **({"window": list(rule.window)} if rule.window is not None else {}),
                **({"service_tier": rule.service_tier} if rule.service_tier else {}),
            }
            for rule in rules
        ],
        sort_keys=True,
    )


def rules_from_json(text: str) -> tuple[Rule, ...]:
    return tuple(
        Rule(
            rates=item["rates"],
            above_input_tokens=item.get("above_input_tokens"),
            window=(item["window"][0], item["window"][1]) if "window" in item else None,
            service_tier=item.get("service_tier", ""),
        )
        for item in json.loads(text)
    )


def validate(price: Price) -> None:
    if not price.provider or "/" in price.provider:
        raise InvalidArgument("price.provider", "must be a non-empty provider id without '/'")
    if not price.model:
        raise InvalidArgument("price.model", "must not be empty")
    for f in fields(Price):
        value = getattr(price, f.name)
        if isinstance(value, int) and value < 0:
            raise InvalidArgument(f"price.{f.name}", "must not be negative")


def load_limits(path: Path) -> dict[tuple[str, str], int]:
    """`[[limit]]` tables: a model's most output tokens, which genai-prices does not record."""
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    limits = {}
    for i, entry in enumerate(doc.get("limit", [])):
        value = entry.get("max_output_tokens")
        if type(value) is not int or value < 0 or not entry.get("provider") or not entry.get("name"):
            raise ValueError(f"{path}: limit #{i + 1} needs provider, name and max_output_tokens >= 0")
        limits[entry["provider"], entry["name"]] = value
    return limits


def builtin(now_ms: int | None = None) -> list[Price]:
    """genai-prices for every model it prices exactly, with our output limits; then the
    hand-written files in catalog_data/, which replace a model's rows wholesale
    (models genai-prices lacks or cannot express, and deliberate corrections)."""
    rows, _ = genai_catalog.rows_from(int(time.time() * 1000) if now_ms is None else now_ms)
    limits = load_limits(BUILTIN / LIMITS)
    by_model: dict[tuple[str, str], list[Price]] = {}
    for row in rows:
        limit = limits.get((row.provider, row.model), row.max_output_tokens)
        by_model.setdefault((row.provider, row.model), []).append(replace(row, max_output_tokens=limit))
    return _over(
        by_model,
        [p for path in sorted(BUILTIN.glob("*.toml")) if path.name != LIMITS for p in load_toml(path)],
    )


def merged(extra: Path | None, now_ms: int | None = None) -> list[Price]:
    """The built-in catalog with the operator's ``extra`` file merged over it (same
    provider and model: the file's row replaces the built-in ones)."""
    rows = builtin(now_ms)
    if extra is None:
        return rows
    by_model: dict[tuple[str, str], list[Price]] = {}
    for row in rows:
        by_model.setdefault((row.provider, row.model), []).append(row)
    return _over(by_model, load_toml(extra))


def _over(by_model: dict[tuple[str, str], list[Price]], replacing: list[Price]) -> list[Price]:
    replaced = {(p.provider, p.model) for p in replacing}
    for key in replaced:
        by_model[key] = []
    for price in replacing:
        by_model[price.provider, price.model].append(price)
    return [price for rows in by_model.values() for price in rows]


def _row_to_price(row: Any) -> Price:
    values = {f.name: getattr(row, f.name) for f in fields(Price)}
    return Price(**{**values, "rules": rules_from_json(row.rules)})


def same_price(a: Price, b: Price) -> bool:
    return a.rules == b.rules and all(getattr(a, name) == getattr(b, name) for name in _PRICE_FIELDS)


def insert(conn: Connection, price: Price, now_ms: int, origin: str = "api") -> Price:
    """Add an effective-dated row (effective now when effective_from_ms is 0)."""
    validate(price)
    if price.effective_from_ms == 0:
        price = replace(price, effective_from_ms=now_ms)
    clash = conn.execute(
        select(prices.c.seq).where(
            prices.c.provider == price.provider,
            prices.c.model == price.model,
            prices.c.effective_from_ms == price.effective_from_ms,
        )
    ).first()
    if clash is not None:
        raise InvalidArgument(
            "price.effective_from_ms", f"{price.qualified_name} already has a row effective at that time"
        )
    conn.execute(prices.insert().values(**_values(price, origin)))
    return price


def _values(price: Price, origin: str) -> dict[str, object]:
    values: dict[str, object] = {f.name: getattr(price, f.name) for f in fields(Price)}
    values["rules"] = rules_to_json(price.rules)
    values["origin"] = origin
    return values


def sync(engine: Engine, catalog: list[Price], now_ms: int) -> int:
    """Store each catalog price that changed since the catalog was last synced;
    returns rows added. A row in force now (effective_from_ms 0 or past) takes effect
    now, so past events keep the price they were charged; a row announced for a
    later day is stored for that day. Compared with the newest row from a catalog
    file, and never over a price set through the API: an operator's UpsertPrice
    stays in force across restarts and upgrades until the operator replaces it.

    The table is read once and the new rows written in one statement: a start
    compares a thousand-odd models, two queries each would cost a second."""
    with engine.begin() as conn:
        stored = _Stored(conn)
        added: list[tuple[Price, str]] = []
        for price in catalog:
            if stored.in_force(price.provider, price.model, max(now_ms, price.effective_from_ms)) == "api":
                continue
            if price.effective_from_ms > now_ms:
                announced = stored.catalog_row(price.provider, price.model, price.effective_from_ms)
                if announced is not None and announced.effective_from_ms == price.effective_from_ms:
                    if same_price(announced, price):
                        continue
                    _delete(conn, announced)  # not in force yet: the newer announcement replaces it
                    stored.remove(announced)
                    added = [(p, o) for p, o in added if p is not announced]
                row = price
            else:
                current = stored.catalog_row(price.provider, price.model, now_ms)
                if current is not None and same_price(current, price):
                    continue
                row = replace(price, effective_from_ms=now_ms)
            validate(row)
            stored.add(row, "catalog")
            added.append((row, "catalog"))
        if added:
            conn.execute(prices.insert(), [_values(p, origin) for p, origin in added])
    return len(added)


class _Stored:
    """The prices table in memory, newest row first per model, for one sync."""

    def __init__(self, conn: Connection) -> None:
        self._rows: dict[tuple[str, str], list[tuple[Price, str]]] = {}
        for row in conn.execute(select(prices).order_by(prices.c.effective_from_ms.desc())):
            self._rows.setdefault((row.provider, row.model), []).append((_row_to_price(row), row.origin))

    def in_force(self, provider: str, model: str, at_ms: int) -> str | None:
        """The origin of the row in force at ``at_ms``."""
        return next(
            (o for p, o in self._rows.get((provider, model), []) if p.effective_from_ms <= at_ms), None
        )

    def catalog_row(self, provider: str, model: str, at_ms: int) -> Price | None:
        rows = self._rows.get((provider, model), [])
        return next((p for p, o in rows if o == "catalog" and p.effective_from_ms <= at_ms), None)

    def add(self, price: Price, origin: str) -> None:
        rows = self._rows.setdefault((price.provider, price.model), [])
        if any(p.effective_from_ms == price.effective_from_ms for p, _ in rows):
            raise InvalidArgument(
                "price.effective_from_ms", f"{price.qualified_name} already has a row effective at that time"
            )
        rows.append((price, origin))
        rows.sort(key=lambda row: row[0].effective_from_ms, reverse=True)

    def remove(self, price: Price) -> None:
        rows = self._rows[price.provider, price.model]
        rows[:] = [(p, o) for p, o in rows if p is not price]


def _delete(conn: Connection, price: Price) -> None:
    conn.execute(
        prices.delete().where(
            prices.c.provider == price.provider,
            prices.c.model == price.model,
            prices.c.effective_from_ms == price.effective_from_ms,
        )
    )


def lookup(
    conn: Connection, provider: str, model: str, at_ms: int, origin: str | None = None
) -> Price | None:
    """The row in force at ``at_ms`` for provider/model, if any."""
    query = select(prices).where(
        prices.c.provider == provider, prices.c.model == model, prices.c.effective_from_ms <= at_ms
    )
    if origin is not None:
        query = query.where(prices.c.origin == origin)
    row = conn.execute(query.order_by(prices.c.effective_from_ms.desc()).limit(1)).first()
    return None if row is None else _row_to_price(row)


def history(conn: Connection, provider: str, model: str) -> list[Price]:
    """Every row for provider/model, newest first (pick with `in_force`)."""
    query = select(prices).where(prices.c.provider == provider, prices.c.model == model)
    return [_row_to_price(r) for r in conn.execute(query.order_by(prices.c.effective_from_ms.desc()))]


def in_force(rows: list[Price], at_ms: int) -> Price | None:
    return next((p for p in rows if p.effective_from_ms <= at_ms), None)


def listing(conn: Connection, at_ms: int, include_history: bool) -> list[Price]:
    query = select(prices)
    if not include_history:
        latest = (
            select(prices.c.provider, prices.c.model, func.max(prices.c.effective_from_ms).label("from_ms"))
            .where(prices.c.effective_from_ms <= at_ms)
            .group_by(prices.c.provider, prices.c.model)
            .subquery()
        )
        query = query.join(
            latest,
            and_(
                prices.c.provider == latest.c.provider,
                prices.c.model == latest.c.model,
                prices.c.effective_from_ms == latest.c.from_ms,
            ),
        )
    rows = conn.execute(query.order_by(prices.c.provider, prices.c.model, prices.c.effective_from_ms))
    return [_row_to_price(row) for row in rows]

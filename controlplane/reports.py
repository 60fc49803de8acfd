"""Read-only usage reports: per-key/per-model rollups, the same grouped by a metadata
tag, and one key's events."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import Engine, case, func, select

from controlplane.errors import InvalidArgument
from controlplane.keystore import decode_cursor, encode_cursor, page_size
from controlplane.records import Page, UsageEvent
from controlplane.store.schema import keys, usage_events


@dataclass(frozen=True)
class Totals:
    requests: int = 0
    input_tokens: int = 0  # every input kind: uncached + cached reads + cache writes
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cost_micros: int = 0
    fee_micros: int = 0
    latency_ms_sum: int = 0
    characters: int = 0
    audio_ms: int = 0
    images: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(a + b for a, b in zip(vars(self).values(), vars(other).values(), strict=True)))

    @property
    def avg_latency_ms(self) -> int:
        return self.latency_ms_sum // self.requests if self.requests else 0


@dataclass(frozen=True)
class ModelRollup:
    provider: str
    model: str
    totals: Totals


@dataclass(frozen=True)
class KeyRollup:
    key_id: str
    name: str
    totals: Totals
    by_model: list[ModelRollup]
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupRollup:
    """The keys that share one value of a metadata tag; value None: the keys without it."""

    value: str | None
    key_ids: tuple[str, ...]
    totals: Totals


def group_by_tag(rollups: list[KeyRollup], tag: str) -> list[GroupRollup]:
    """Per-key rollups summed per value of `tag` (the keys' metadata as it is now): most
    cost first, then by value; the keys without the tag last. Integer sums, nothing lost:
    the groups add up to the keys."""
    groups: dict[str | None, tuple[list[str], Totals]] = {}
    for rollup in rollups:
        value = rollup.metadata.get(tag)
        key_ids, totals = groups.get(value, ([], Totals()))
        key_ids.append(rollup.key_id)
        groups[value] = (key_ids, totals + rollup.totals)
    ordered = sorted(groups.items(), key=lambda g: (g[0] is None, -g[1][1].cost_micros, g[0] or ""))
    return [GroupRollup(value, tuple(key_ids), totals) for value, (key_ids, totals) in ordered]


class Reports:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def usage(self, account_id: str, from_ms: int, to_ms: int) -> list[KeyRollup]:
        """Usage in [from_ms, to_ms) per key and model, only the account's keys."""
        if from_ms < 0:
            raise InvalidArgument("from_ms", "must not be negative")
        if to_ms <= from_ms:
            raise InvalidArgument("to_ms", "must be after from_ms")
        e = usage_events.c
        query = (
            select(
                e.key_id,
                keys.c.name,
                keys.c.metadata,
                e.provider,
                e.model,
                func.count().label("requests"),
                func.sum(
                    e.input_tokens + e.cached_input_tokens + e.cache_write_tokens + e.audio_input_tokens
                ).label("input_tokens"),
                func.sum(e.output_tokens + e.audio_output_tokens).label("output_tokens"),
                func.sum(e.cached_input_tokens).label("cached_input_tokens"),
                func.sum(e.cache_write_tokens).label("cache_write_tokens"),
                func.sum(e.cost_micros).label("cost_micros"),
                func.sum(e.fee_micros).label("fee_micros"),
                func.sum(e.latency_ms).label("latency_ms_sum"),
                func.sum(e.characters).label("characters"),
                func.sum(e.audio_ms).label("audio_ms"),
                func.sum(e.images).label("images"),
            )
            .join(keys, keys.c.id == e.key_id)
            .where(e.account_id == account_id, e.ts_ms >= from_ms, e.ts_ms < to_ms)
            .group_by(e.key_id, keys.c.name, keys.c.metadata, e.provider, e.model)
            .order_by(e.key_id, e.provider, e.model)
        )
        rollups: dict[str, KeyRollup] = {}
        with self._engine.connect() as conn:
            for row in conn.execute(query):
                totals = Totals(*(int(getattr(row, f)) for f in Totals.__dataclass_fields__))
                entry = rollups.get(row.key_id) or KeyRollup(
                    row.key_id, row.name, Totals(), [], json.loads(row.metadata)
                )
                entry.by_model.append(ModelRollup(row.provider, row.model, totals))
                rollups[row.key_id] = KeyRollup(
                    entry.key_id, entry.name, entry.totals + totals, entry.by_model, entry.metadata
                )
        return list(rollups.values())

    def costs_since(self, key_id: str, starts_ms: tuple[int, ...]) -> tuple[int, ...]:
        """The key's event costs since each start (micro-USD), in one pass over its events."""
        e = usage_events.c
        columns = [
            func.coalesce(func.sum(case((e.ts_ms >= start, e.cost_micros), else_=0)), 0)
            for start in starts_ms
        ]
        with self._engine.connect() as conn:
            row = conn.execute(select(*columns).where(e.key_id == key_id)).one()
        return tuple(int(value) for value in row)

    def events(self, key_id: str, size: int, token: str) -> Page[UsageEvent]:
        """One key's events, newest first (the caller has checked ownership)."""
        limit = page_size(size)
        before = decode_cursor(token)
        query = select(usage_events).where(usage_events.c.key_id == key_id)
        if before is not None:
            query = query.where(usage_events.c.seq < before)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(usage_events.c.seq.desc()).limit(limit + 1)).mappings().all()
        items = [UsageEvent.from_row(r) for r in rows[:limit]]
        next_token = encode_cursor(rows[limit - 1]["seq"]) if len(rows) > limit else ""
        return Page(items, next_token)

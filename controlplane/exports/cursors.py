"""The per-sink cursor rows (`export_cursors`) and the reads the exporter makes of
`usage_events`. Every write is one conditional UPDATE, so a replica that lost the
sink's lease, or read a stale position, changes nothing."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from controlplane.exports.sink import ExportEvent
from controlplane.money import Units
from controlplane.store.schema import export_cursors, keys, usage_events

MAX_ERROR = 2000  # characters of the last error kept


@dataclass(frozen=True)
class CursorStatus:
    sink: str
    kind: str
    position: int  # every event with seq <= position is delivered
    exported: int
    behind: int  # events past the position (some may be inside the lag still)
    last_success_ms: int | None
    last_error: str
    last_error_ms: int | None
    failures: int
    owner: str
    lease_until_ms: int


class Cursors:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def max_seq(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(usage_events.c.seq), 0))).scalar_one())

    def ensure(self, sink: str, kind: str, start_at_end: bool, now_ms: int) -> None:
        """Create the sink's cursor if it has none: at the start of the events, or at their end."""
        with self._engine.connect() as conn:
            if conn.execute(select(export_cursors.c.sink).where(export_cursors.c.sink == sink)).first():
                return
        position = self.max_seq() if start_at_end else 0
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    export_cursors.insert().values(
                        sink=sink,
                        kind=kind,
                        position=position,
                        exported=0,
                        created_ms=now_ms,
                        last_success_ms=None,
                        last_error="",
                        last_error_ms=None,
                        failures=0,
                        owner="",
                        lease_until_ms=0,
                    )
                )
        except IntegrityError:  # another replica made it first
            pass

    def claim(self, sink: str, owner: str, now_ms: int, lease_ms: int) -> int | None:
        """Take or renew the sink's lease; returns the position, or None if another holds it."""
        with self._engine.begin() as conn:
            done = conn.execute(
                export_cursors.update()
                .where(
                    export_cursors.c.sink == sink,
                    (export_cursors.c.owner == owner) | (export_cursors.c.lease_until_ms < now_ms),
                )
                .values(owner=owner, lease_until_ms=now_ms + lease_ms)
            )
            if done.rowcount != 1:
                return None
            return int(
                conn.execute(
                    select(export_cursors.c.position).where(export_cursors.c.sink == sink)
                ).scalar_one()
            )

    def release(self, sink: str, owner: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                export_cursors.update()
                .where(export_cursors.c.sink == sink, export_cursors.c.owner == owner)
                .values(lease_until_ms=0)
            )

    def advance(self, sink: str, owner: str, old: int, new: int, count: int, now_ms: int) -> bool:
        """Move the cursor from old to new after the sink acknowledged `count` events."""
        with self._engine.begin() as conn:
            done = conn.execute(
                export_cursors.update()
                .where(
                    export_cursors.c.sink == sink,
                    export_cursors.c.owner == owner,
                    export_cursors.c.position == old,
                )
                .values(
                    position=new,
                    exported=export_cursors.c.exported + count,
                    last_success_ms=now_ms,
                    last_error="",
                    failures=0,
                )
            )
            return done.rowcount == 1

    def failed(self, sink: str, owner: str, error: str, now_ms: int) -> int:
        """Record a failed attempt; returns the consecutive failures so far."""
        with self._engine.begin() as conn:
            conn.execute(
                export_cursors.update()
                .where(export_cursors.c.sink == sink, export_cursors.c.owner == owner)
                .values(
                    last_error=error[:MAX_ERROR], last_error_ms=now_ms, failures=export_cursors.c.failures + 1
                )
            )
            return int(
                conn.execute(
                    select(export_cursors.c.failures).where(export_cursors.c.sink == sink)
                ).scalar_one()
            )

    def events(self, after: int, upto: int, limit: int) -> list[ExportEvent]:
        """Events with after < seq <= upto, in seq order, with their key's name and metadata."""
        query = (
            select(usage_events, keys.c.name.label("key_name"), keys.c.metadata.label("key_metadata"))
            .select_from(usage_events.outerjoin(keys, keys.c.id == usage_events.c.key_id))
            .where(usage_events.c.seq > after, usage_events.c.seq <= upto)
            .order_by(usage_events.c.seq)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return [_event(row) for row in conn.execute(query).mappings()]

    def status(self, sinks: Sequence[str] = ()) -> list[CursorStatus]:
        """Every cursor (or the named ones), with how many events are past it."""
        query = select(export_cursors).order_by(export_cursors.c.sink)
        if sinks:
            query = query.where(export_cursors.c.sink.in_(list(sinks)))
        out = []
        with self._engine.connect() as conn:
            for row in conn.execute(query).mappings().all():
                behind = conn.execute(
                    select(func.count()).select_from(usage_events).where(usage_events.c.seq > row["position"])
                ).scalar_one()
                out.append(
                    CursorStatus(
                        sink=row["sink"],
                        kind=row["kind"],
                        position=row["position"],
                        exported=row["exported"],
                        behind=int(behind),
                        last_success_ms=row["last_success_ms"],
                        last_error=row["last_error"],
                        last_error_ms=row["last_error_ms"],
                        failures=row["failures"],
                        owner=row["owner"],
                        lease_until_ms=row["lease_until_ms"],
                    )
                )
        return out


def _event(r: Mapping[Any, Any]) -> ExportEvent:
    metadata = r["key_metadata"]
    return ExportEvent(
        seq=int(r["seq"]),
        request_id=str(r["request_id"]),
        key_id=str(r["key_id"]),
        account_id=str(r["account_id"]),
        ts_ms=int(r["ts_ms"]),
        provider=str(r["provider"]),
        model=str(r["model"]),
        units=Units(**{f.name: int(r[f.name]) for f in fields(Units)}),
        cost_micros=int(r["cost_micros"]),
        fee_micros=int(r["fee_micros"]),
        status=str(r["status"]),
        http_status=int(r["http_status"]),
        estimated=bool(r["estimated"]),
        service_tier=str(r["service_tier"]),
        key_name=str(r["key_name"] or ""),
        key_metadata=json.loads(str(metadata)) if metadata else {},
    )

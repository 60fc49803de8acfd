"""Threshold alerts: the webhook events a settlement produces, written to the outbox in the
transaction that commits the spend behind them.

Crossings are found where spend changes, in the ledger's settle path, on rows it has locked:
the key's spend before the batch (its locked, swept row) and after it (before + the batch's
cost), and the wallet's balance after the batch's UPDATE of the account row (which, from that
UPDATE to the commit, holds the row's lock). So every crossing is seen by exactly one
transaction, whichever control plane ran it. Reserve is not touched: it is the hot path.

What an event is about decides its id (`event_id`): key, period start, cap and percent for a
threshold; key and period start for a period reset; account, amount and total credit for a
low wallet. The outbox's unique constraint on that id is the last word on "once":

- `key.threshold_crossed` (percent < 100) / `key.cap_reached` (percent 100): spend went from
  below `cap × percent / 100` to at or above it. Once per percent, cap and period: a new
  period, or a changed cap, re-arms them.
- `key.period_reset`: emitted lazily, by the first settlement a daily or monthly key has in a
  period that is not its first. A key without traffic in a period gets none for it.
- `wallet.low`: the balance (credit − spent) went from above the account's amount to at or
  below it. Once per credit level: a top-up re-arms it.

Only accounts with an endpoint subscribed to the event type get rows, so an account without
webhooks costs one indexed SELECT per settle batch."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from controlplane.periods import CapPeriod, bounds
from controlplane.records import Account, Key
from controlplane.store.schema import (
    accounts,
    key_thresholds,
    wallet_thresholds,
    webhook_endpoints,
    webhook_outbox,
)

THRESHOLD_CROSSED = "key.threshold_crossed"
CAP_REACHED = "key.cap_reached"
PERIOD_RESET = "key.period_reset"
WALLET_LOW = "wallet.low"
EVENT_TYPES = (THRESHOLD_CROSSED, CAP_REACHED, PERIOD_RESET, WALLET_LOW)
DEFAULT_PERCENTS = (50, 80, 100)


@dataclass(frozen=True)
class Alert:
    event_id: str
    account_id: str
    event_type: str
    data: tuple[tuple[str, Any], ...]  # the body's `data`, in order

    def body(self, now_ms: int) -> str:
        """The JSON every delivery attempt sends, byte for byte (Standard Webhooks' shape)."""
        stamp = datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(timespec="milliseconds")
        payload = {
            "id": self.event_id,
            "type": self.event_type,
            "timestamp": stamp.replace("+00:00", "Z"),
            "data": dict(self.data),
        }
        return json.dumps(payload, separators=(",", ":"))


def event_id(*parts: object) -> str:
    return "evt_" + hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def _key_data(key: Key, spent: int, now_ms: int, **extra: Any) -> tuple[tuple[str, Any], ...]:
    return (
        ("account_id", key.account_id),
        ("key_id", key.id),
        ("key_name", key.name),
        *extra.items(),
        ("cap_micros", key.cap_micros),
        ("spent_micros", spent),
        ("cap_period", key.cap_period.value),
        ("period_start_ms", key.period_start_ms),
        ("period_reset_ms", key.period_reset_ms(now_ms) or None),
    )


def key_crossings(key: Key, before: int, after: int, percents: Sequence[int], now_ms: int) -> list[Alert]:
    """The thresholds spend crossed going from `before` to `after` (integers only:
    spent × 100 ≥ cap × percent)."""
    cap = key.cap_micros
    if not cap or after <= before:
        return []
    out = []
    for percent in percents:
        if before * 100 < cap * percent <= after * 100:
            kind = CAP_REACHED if percent == 100 else THRESHOLD_CROSSED
            out.append(
                Alert(
                    event_id(key.id, "threshold", key.period_start_ms, cap, percent),
                    key.account_id,
                    kind,
                    _key_data(key, after, now_ms, threshold_percent=percent),
                )
            )
    return out


def period_reset(key: Key, spent: int, now_ms: int) -> Alert | None:
    """The reset of the key's current period, if it is not the key's first."""
    if key.cap_period is CapPeriod.LIFETIME:
        return None
    if key.period_start_ms <= bounds(key.cap_period, key.created_ms)[0]:
        return None
    return Alert(
        event_id(key.id, "period_reset", key.period_start_ms),
        key.account_id,
        PERIOD_RESET,
        _key_data(key, spent, now_ms),
    )


def wallet_low(account: Account, spent_now: int, low_micros: int) -> Alert | None:
    """The crossing of `low_micros` by the balance, given the account row after the batch
    and what the batch spent from it."""
    after = account.credit_micros - account.spent_micros
    before = after + spent_now
    if not before > low_micros >= after:
        return None
    return Alert(
        event_id(account.id, "wallet.low", low_micros, account.credit_micros),
        account.id,
        WALLET_LOW,
        (
            ("account_id", account.id),
            ("low_micros", low_micros),
            ("balance_micros", after),
            ("credit_micros", account.credit_micros),
            ("spent_micros", account.spent_micros),
        ),
    )


def parse_percents(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in json.loads(text))


class Alerts:
    """The ledger's hook (ledger.SpendObserver): called inside the settle transaction."""

    def record(
        self,
        conn: Connection,
        keys_before: Mapping[str, Key],
        key_spent: Mapping[str, int],
        wallet_spent: Mapping[str, int],
        now_ms: int,
    ) -> int:
        """Write the batch's events to the outbox; returns how many were new."""
        subscribed = {
            row.account_id: set(json.loads(row.event_types)) or set(EVENT_TYPES)
            for row in conn.execute(
                select(webhook_endpoints.c.account_id, webhook_endpoints.c.event_types).where(
                    webhook_endpoints.c.account_id.in_(sorted(wallet_spent))
                )
            )
        }
        if not subscribed:
            return 0
        touched = [keys_before[k] for k in sorted(key_spent) if keys_before[k].account_id in subscribed]
        percents = {
            row.key_id: parse_percents(row.percents)
            for row in conn.execute(
                select(key_thresholds.c.key_id, key_thresholds.c.percents).where(
                    key_thresholds.c.key_id.in_([k.id for k in touched])
                )
            )
        }
        alerts: list[Alert] = []
        for key in touched:
            after = key.spent_micros + key_spent[key.id]
            reset = period_reset(key, after, now_ms)
            if reset is not None:
                alerts.append(reset)
            alerts += key_crossings(
                key, key.spent_micros, after, percents.get(key.id, DEFAULT_PERCENTS), now_ms
            )
        lows = {
            row.account_id: row.low_micros
            for row in conn.execute(
                select(wallet_thresholds.c.account_id, wallet_thresholds.c.low_micros).where(
                    wallet_thresholds.c.account_id.in_(sorted(subscribed))
                )
            )
        }
        if lows:
            rows = conn.execute(select(accounts).where(accounts.c.id.in_(sorted(lows)))).mappings()
            for account in map(Account.from_row, rows):
                low = wallet_low(account, wallet_spent[account.id], lows[account.id])
                if low is not None:
                    alerts.append(low)
        return insert(conn, [a for a in alerts if a.event_type in subscribed[a.account_id]], now_ms)


def insert(conn: Connection, alerts: Iterable[Alert], now_ms: int) -> int:
    """Add the alerts the outbox does not hold yet, as pending deliveries."""
    todo = {a.event_id: a for a in alerts}
    if not todo:
        return 0
    held = set(
        conn.scalars(select(webhook_outbox.c.event_id).where(webhook_outbox.c.event_id.in_(sorted(todo))))
    )
    new = [a for event, a in todo.items() if event not in held]
    if new:
        conn.execute(
            webhook_outbox.insert(),
            [
                {
                    "event_id": a.event_id,
                    "account_id": a.account_id,
                    "event_type": a.event_type,
                    "body": a.body(now_ms),
                    "created_ms": now_ms,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_ms": now_ms,
                    "lease_until_ms": 0,
                    "lease_token": "",
                    "last_error": "",
                    "last_status_code": 0,
                    "delivered_ms": None,
                }
                for a in new
            ],
        )
    return len(new)

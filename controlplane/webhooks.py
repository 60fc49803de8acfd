"""Webhook configuration and the deliveries' record: an account's endpoint (URL, event
types, signing secret), its keys' thresholds, its wallet-low amount, and the outbox rows
as the account sees them. Every method takes the caller's account: another account's key
is NOT_FOUND, as everywhere else."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, select

from controlplane import egress
from controlplane.alerts import DEFAULT_PERCENTS, EVENT_TYPES, parse_percents
from controlplane.errors import InvalidArgument, NotFound
from controlplane.keystore import INT64_MAX, decode_cursor, encode_cursor, page_size
from controlplane.records import Clock, Page
from controlplane.store.schema import (
    accounts,
    key_thresholds,
    keys,
    wallet_thresholds,
    webhook_endpoints,
    webhook_outbox,
)

MAX_URL = 2000
MAX_PERCENTS = 20
SECRET_PREFIX = "whsec_"
SECRET_DISPLAY = len(SECRET_PREFIX) + 4
STATUSES = ("pending", "delivered", "dead")


@dataclass(frozen=True)
class Endpoint:
    url: str
    event_types: tuple[str, ...]  # empty: every type
    secret_prefix: str
    created_ms: int
    updated_ms: int
    wallet_low_micros: int | None


@dataclass(frozen=True)
class Delivery:
    event_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_ms: int
    last_error: str
    last_status_code: int
    created_ms: int
    delivered_ms: int | None
    body: str

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Delivery:
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})


def new_secret() -> str:
    """Standard Webhooks' form: `whsec_` + base64 of the key's bytes (here 32 random ones)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def check_url(url: str, allow_private: bool = False) -> str:
    url = url.strip()
    if not url:
        raise InvalidArgument("url", "must not be empty")
    if len(url) > MAX_URL:
        raise InvalidArgument("url", f"must be at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number or out of range
    except ValueError as exc:
        raise InvalidArgument("url", f"is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument("url", "must be an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None or any(c.isspace() for c in url):
        raise InvalidArgument("url", "must not carry credentials or whitespace")
    del port
    egress.check_configured(parts.hostname, allow_private)
    return url


def check_event_types(types: Sequence[str]) -> tuple[str, ...]:
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise InvalidArgument("event_types", f"unknown {unknown}; known: {list(EVENT_TYPES)}")
    return tuple(t for t in EVENT_TYPES if t in types)


def check_percents(percents: Sequence[int]) -> tuple[int, ...]:
    if len(percents) > MAX_PERCENTS:
        raise InvalidArgument("percents", f"at most {MAX_PERCENTS} thresholds")
    if any(not 1 <= p <= 100 for p in percents):
        raise InvalidArgument("percents", "every threshold must be a whole percent from 1 to 100")
    return tuple(sorted(set(percents)))


class WebhookStore:
    def __init__(self, engine: Engine, clock: Clock, allow_private: bool = False) -> None:
        self._engine = engine
        self._clock = clock
        self._allow_private = allow_private

    @staticmethod
    def _lock_account(conn: Connection, account_id: str) -> None:
        """Serialises an account's configuration changes (rare; the row lock is brief)."""
        found = conn.execute(
            select(accounts.c.id).where(accounts.c.id == account_id).with_for_update()
        ).first()
        if found is None:
            raise NotFound(f"account {account_id} not found")

    @staticmethod
    def _endpoint(conn: Connection, account_id: str) -> Endpoint:
        row = conn.execute(
            select(webhook_endpoints).where(webhook_endpoints.c.account_id == account_id)
        ).first()
        if row is None:
            raise NotFound("no webhook endpoint is configured for this account")
        low = conn.scalar(
            select(wallet_thresholds.c.low_micros).where(wallet_thresholds.c.account_id == account_id)
        )
        return Endpoint(
            url=row.url,
            event_types=tuple(json.loads(row.event_types)),
            secret_prefix=row.secret[:SECRET_DISPLAY],
            created_ms=row.created_ms,
            updated_ms=row.updated_ms,
            wallet_low_micros=low,
        )

    def set_endpoint(
        self, account_id: str, url: str, event_types: Sequence[str], rotate_secret: bool
    ) -> tuple[Endpoint, str]:
        """Create or change the endpoint; returns it and its secret when one was made
        (a new endpoint, or rotate_secret), else ""."""
        url, types = check_url(url, self._allow_private), check_event_types(event_types)
        now = self._clock()
        with self._engine.begin() as conn:
            self._lock_account(conn, account_id)
            exists = conn.scalar(
                select(webhook_endpoints.c.account_id).where(webhook_endpoints.c.account_id == account_id)
            )
            secret = new_secret() if exists is None or rotate_secret else ""
            values: dict[str, Any] = {"url": url, "event_types": json.dumps(list(types)), "updated_ms": now}
            if secret:
                values["secret"] = secret
            if exists is None:
                conn.execute(
                    webhook_endpoints.insert().values(account_id=account_id, created_ms=now, **values)
                )
            else:
                conn.execute(
                    webhook_endpoints.update()
                    .where(webhook_endpoints.c.account_id == account_id)
                    .values(**values)
                )
            return self._endpoint(conn, account_id), secret

    def get_endpoint(self, account_id: str) -> Endpoint:
        with self._engine.connect() as conn:
            return self._endpoint(conn, account_id)

    def delete_endpoint(self, account_id: str) -> int:
        """Remove the endpoint; its pending deliveries go dead (nowhere to send them).
        Returns how many did."""
        now = self._clock()
        with self._engine.begin() as conn:
            self._lock_account(conn, account_id)
            gone = conn.execute(
                webhook_endpoints.delete().where(webhook_endpoints.c.account_id == account_id)
            )
            if gone.rowcount == 0:
                raise NotFound("no webhook endpoint is configured for this account")
            dropped = conn.execute(
                webhook_outbox.update()
                .where(webhook_outbox.c.account_id == account_id, webhook_outbox.c.status == "pending")
                .values(status="dead", last_error="endpoint deleted", next_attempt_ms=now)
            )
            return int(dropped.rowcount)

    def _own_key(self, conn: Connection, account_id: str, key_id: str) -> None:
        found = conn.scalar(select(keys.c.id).where(keys.c.id == key_id, keys.c.account_id == account_id))
        if found is None:
            raise NotFound(f"key {key_id} not found")

    def set_key_thresholds(self, account_id: str, key_id: str, percents: Sequence[int]) -> tuple[int, ...]:
        """Replace a key's thresholds (empty: none)."""
        checked = check_percents(percents)
        with self._engine.begin() as conn:
            self._lock_account(conn, account_id)
            self._own_key(conn, account_id, key_id)
            conn.execute(key_thresholds.delete().where(key_thresholds.c.key_id == key_id))
            conn.execute(
                key_thresholds.insert().values(
                    key_id=key_id, account_id=account_id, percents=json.dumps(list(checked))
                )
            )
        return checked

    def key_thresholds(self, account_id: str, key_id: str) -> tuple[int, ...]:
        with self._engine.connect() as conn:
            self._own_key(conn, account_id, key_id)
            text = conn.scalar(select(key_thresholds.c.percents).where(key_thresholds.c.key_id == key_id))
        return DEFAULT_PERCENTS if text is None else parse_percents(text)

    def set_wallet_low(self, account_id: str, low_micros: int | None) -> int | None:
        """Set (or, with None, remove) the balance below which wallet.low fires."""
        if low_micros is not None and not 0 <= low_micros <= INT64_MAX:
            raise InvalidArgument("low_micros", "must not be negative")
        with self._engine.begin() as conn:
            self._lock_account(conn, account_id)
            conn.execute(wallet_thresholds.delete().where(wallet_thresholds.c.account_id == account_id))
            if low_micros is not None:
                conn.execute(wallet_thresholds.insert().values(account_id=account_id, low_micros=low_micros))
        return low_micros

    def retry(self, account_id: str, event_id: str) -> Delivery:
        """Send an event again now, whatever its status: pending, no attempts counted,
        its lease cleared (an attempt in flight has its outcome ignored: at least once)."""
        now = self._clock()
        with self._engine.begin() as conn:
            self._lock_account(conn, account_id)
            if (
                conn.scalar(
                    select(webhook_endpoints.c.account_id).where(webhook_endpoints.c.account_id == account_id)
                )
                is None
            ):
                raise NotFound("no webhook endpoint is configured for this account")
            found = conn.execute(
                webhook_outbox.update()
                .where(webhook_outbox.c.account_id == account_id, webhook_outbox.c.event_id == event_id)
                .values(
                    status="pending",
                    attempts=0,
                    next_attempt_ms=now,
                    lease_until_ms=0,
                    lease_token="",
                    delivered_ms=None,
                )
            )
            if found.rowcount == 0:
                raise NotFound(f"webhook event {event_id} not found")
            row = (
                conn.execute(select(webhook_outbox).where(webhook_outbox.c.event_id == event_id))
                .mappings()
                .one()
            )
        return Delivery.from_row(row)

    def deliveries(self, account_id: str, status: str, size: int, token: str) -> Page[Delivery]:
        """The account's events, newest first; `status` "" for every status."""
        if status and status not in STATUSES:
            raise InvalidArgument("status", f"must be one of {list(STATUSES)}")
        limit = page_size(size)
        before = decode_cursor(token)
        query = select(webhook_outbox).where(webhook_outbox.c.account_id == account_id)
        if status:
            query = query.where(webhook_outbox.c.status == status)
        if before is not None:
            query = query.where(webhook_outbox.c.seq < before)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(webhook_outbox.c.seq.desc()).limit(limit + 1)).mappings().all()
        items = [Delivery.from_row(r) for r in rows[:limit]]
        next_token = encode_cursor(rows[limit - 1]["seq"]) if len(rows) > limit else ""
        return Page(items, next_token)

"""The ledger: reserve before a request, settle or release after.

Invariants, for every key and every account, at every commit:

    key.reserved_micros     = Σ amount_micros of its `active` reservations
    account.reserved_micros = Σ wallet_micros of its keys' `active` reservations
    account.spent_micros    = Σ (cost + fee) of its usage events
    key.spent_micros        = Σ cost of its usage events settled in the current period

Every operation runs in one transaction that locks the key row, then the
account row (always in that order, so two transactions never wait on each
other in a cycle): `SELECT … FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on
SQLite. Decisions are pure functions of the locked rows (`admit`). Every
operation is idempotent by request_id: a reservation row is the record of a
Reserve, a usage_events row the record of a Settle.

Admission (the brief's FAQ): a request is admitted while the key has budget
left (`cap - spent - reserved > 0`) and so does the wallet; a strict key
admits only if the whole estimate fits. With N parallel requests the cap is
overrun by at most one request's estimate, never N of them.

A reservation is a lease: past `expires_ms` it is expired (on the next
operation on its key, or by the sweeper) and its budget returns. A Settle
after expiry still charges the actual cost: usage that happened is billed."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select

from controlplane import catalog
from controlplane.errors import InvalidArgument, NotFound
from controlplane.money import Units, cost_micros, fee_micros
from controlplane.periods import bounds
from controlplane.records import Account, Clock, EventStatus, Key, UsageEvent
from controlplane.store.schema import accounts, keys, reservations, usage_events

log = logging.getLogger(__name__)

DEFAULT_TTL_MS = 10 * 60 * 1000
MAX_TTL_MS = 24 * 60 * 60 * 1000
MAX_REQUEST_ID = 100


class Refusal(enum.Enum):
    KEY_CAP = "key_cap"
    WALLET = "wallet"
    KEY_REVOKED = "key_revoked"


@dataclass(frozen=True)
class Reservation:
    granted: bool
    refusal: Refusal | None
    key: Key
    wallet_remaining_micros: int
    period_reset_ms: int
    expires_ms: int


@dataclass(frozen=True)
class Settlement:
    request_id: str
    key_id: str
    provider: str
    model: str
    units: Units
    started_ms: int = 0
    latency_ms: int = 0
    ttfb_ms: int = 0
    status: EventStatus = EventStatus.OK
    http_status: int = 200
    estimated: bool = False


def admit(key: Key, account: Account, amount: int, wallet_amount: int) -> Refusal | None:
    """The admission rule, on locked and expired-swept rows."""
    if key.revoked:
        return Refusal.KEY_REVOKED
    if key.cap_micros is not None:
        left = key.cap_micros - key.spent_micros - key.reserved_micros
        if left <= 0 or (key.strict and amount > left):
            return Refusal.KEY_CAP
    if account.remaining_micros <= 0 or (key.strict and wallet_amount > account.remaining_micros):
        return Refusal.WALLET
    return None


def _check_request_id(request_id: str) -> None:
    if not request_id or len(request_id) > MAX_REQUEST_ID:
        raise InvalidArgument("request_id", f"must be 1 to {MAX_REQUEST_ID} characters")


class Ledger:
    def __init__(self, engine: Engine, clock: Clock, fee_bps: int) -> None:
        self._engine = engine
        self._clock = clock
        self.fee_bps = fee_bps

    # locking helpers ------------------------------------------------------

    @staticmethod
    def _lock_key(conn: Connection, key_id: str) -> Key:
        row = conn.execute(select(keys).where(keys.c.id == key_id).with_for_update()).mappings().first()
        if row is None:
            raise NotFound(f"key {key_id} not found")
        return Key.from_row(row)

    @staticmethod
    def _lock_account(conn: Connection, account_id: str) -> Account:
        row = (
            conn.execute(select(accounts).where(accounts.c.id == account_id).with_for_update())
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound(f"account {account_id} not found")
        return Account.from_row(row)

    def _sweep_and_roll(self, conn: Connection, key: Key, now: int) -> tuple[Key, Account]:
        """Lock the account, expire the key's stale leases and start a new cap
        period if one began; returns the fresh rows."""
        self._lock_account(conn, key.account_id)
        stale = conn.execute(
            select(reservations.c.request_id, reservations.c.amount_micros, reservations.c.wallet_micros)
            .where(
                reservations.c.key_id == key.id,
                reservations.c.state == "active",
                reservations.c.expires_ms <= now,
            )
            .with_for_update()
        ).all()
        if stale:
            conn.execute(
                reservations.update()
                .where(reservations.c.request_id.in_([r.request_id for r in stale]))
                .values(state="expired")
            )
            self._move(
                conn,
                key.id,
                key.account_id,
                key_reserved=-sum(r.amount_micros for r in stale),
                wallet_reserved=-sum(r.wallet_micros for r in stale),
            )
            log.info("expired %d reservation(s) of key %s", len(stale), key.id)
        start = bounds(key.cap_period, now)[0]
        if start > key.period_start_ms:
            conn.execute(
                keys.update().where(keys.c.id == key.id).values(spent_micros=0, period_start_ms=start)
            )
        key_row = conn.execute(select(keys).where(keys.c.id == key.id)).mappings().one()
        account_row = conn.execute(select(accounts).where(accounts.c.id == key.account_id)).mappings().one()
        return Key.from_row(key_row), Account.from_row(account_row)

    @staticmethod
    def _move(
        conn: Connection,
        key_id: str,
        account_id: str,
        key_reserved: int = 0,
        key_spent: int = 0,
        wallet_reserved: int = 0,
        wallet_spent: int = 0,
    ) -> None:
        conn.execute(
            keys.update()
            .where(keys.c.id == key_id)
            .values(
                reserved_micros=keys.c.reserved_micros + key_reserved,
                spent_micros=keys.c.spent_micros + key_spent,
            )
        )
        conn.execute(
            accounts.update()
            .where(accounts.c.id == account_id)
            .values(
                reserved_micros=accounts.c.reserved_micros + wallet_reserved,
                spent_micros=accounts.c.spent_micros + wallet_spent,
            )
        )

    # operations -----------------------------------------------------------

    def reserve(self, key_id: str, request_id: str, amount_micros: int, ttl_ms: int = 0) -> Reservation:
        _check_request_id(request_id)
        if amount_micros < 0:
            raise InvalidArgument("amount_micros", "must not be negative")
        if ttl_ms < 0 or ttl_ms > MAX_TTL_MS:
            raise InvalidArgument("ttl_ms", f"must be between 0 and {MAX_TTL_MS}")
        now = self._clock()
        wallet_amount = amount_micros + fee_micros(amount_micros, self.fee_bps)
        with self._engine.begin() as conn:
            key = self._lock_key(conn, key_id)
            existing = conn.execute(
                select(reservations).where(reservations.c.request_id == request_id)
            ).first()
            key, account = self._sweep_and_roll(conn, key, now)
            if existing is not None:
                if existing.key_id != key_id:
                    raise InvalidArgument("request_id", "already used for another key")
                return self._outcome(key, account, None, existing.expires_ms, now)
            refusal = admit(key, account, amount_micros, wallet_amount)
            if refusal is not None:
                return self._outcome(key, account, refusal, 0, now)
            expires = now + (ttl_ms or DEFAULT_TTL_MS)
            conn.execute(
                reservations.insert().values(
                    request_id=request_id,
                    key_id=key_id,
                    account_id=key.account_id,
                    amount_micros=amount_micros,
                    wallet_micros=wallet_amount,
                    state="active",
                    created_ms=now,
                    expires_ms=expires,
                )
            )
            self._move(
                conn, key_id, key.account_id, key_reserved=amount_micros, wallet_reserved=wallet_amount
            )
            key, account = self._sweep_and_roll(conn, key, now)
            return self._outcome(key, account, None, expires, now)

    @staticmethod
    def _outcome(key: Key, account: Account, refusal: Refusal | None, expires: int, now: int) -> Reservation:
        return Reservation(
            granted=refusal is None,
            refusal=refusal,
            key=key,
            wallet_remaining_micros=max(0, account.remaining_micros),
            period_reset_ms=key.period_reset_ms(now),
            expires_ms=expires,
        )

    def settle(self, s: Settlement) -> tuple[UsageEvent, bool]:
        """Price and record a finished request; returns (event, duplicate)."""
        _check_request_id(s.request_id)
        if not s.key_id:
            raise InvalidArgument("key_id", "must not be empty")
        now = self._clock()
        started = s.started_ms or now
        with self._engine.begin() as conn:
            key = self._lock_key(conn, s.key_id)
            previous = (
                conn.execute(select(usage_events).where(usage_events.c.request_id == s.request_id))
                .mappings()
                .first()
            )
            if previous is not None:
                if previous["key_id"] != s.key_id:
                    raise InvalidArgument("request_id", "already settled for another key")
                return UsageEvent.from_row(previous), True
            price = catalog.lookup(conn, s.provider, s.model, started)
            if price is None:
                raise InvalidArgument("model", f"unknown model {s.provider}/{s.model}: not in the catalog")
            key, _ = self._sweep_and_roll(conn, key, now)
            lease = conn.execute(
                select(reservations).where(reservations.c.request_id == s.request_id).with_for_update()
            ).first()
            if lease is not None and lease.key_id != s.key_id:
                raise InvalidArgument("request_id", "reserved for another key")
            cost = cost_micros(s.units, price)
            fee = fee_micros(cost, self.fee_bps)
            held, wallet_held = 0, 0
            if lease is not None and lease.state == "active":
                held, wallet_held = lease.amount_micros, lease.wallet_micros
            if lease is not None:
                conn.execute(
                    reservations.update()
                    .where(reservations.c.request_id == s.request_id)
                    .values(state="settled")
                )
            self._move(
                conn,
                key.id,
                key.account_id,
                key_reserved=-held,
                key_spent=cost,
                wallet_reserved=-wallet_held,
                wallet_spent=cost + fee,
            )
            event = UsageEvent(
                request_id=s.request_id,
                key_id=key.id,
                ts_ms=started,
                provider=s.provider,
                model=s.model,
                units=s.units,
                cost_micros=cost,
                fee_micros=fee,
                latency_ms=max(0, s.latency_ms),
                ttfb_ms=max(0, s.ttfb_ms),
                status=s.status,
                http_status=s.http_status,
                estimated=s.estimated,
            )
            conn.execute(
                usage_events.insert().values(
                    request_id=event.request_id,
                    key_id=event.key_id,
                    account_id=key.account_id,
                    ts_ms=event.ts_ms,
                    provider=event.provider,
                    model=event.model,
                    input_tokens=s.units.input_tokens,
                    output_tokens=s.units.output_tokens,
                    cached_input_tokens=s.units.cached_input_tokens,
                    cache_write_tokens=s.units.cache_write_tokens,
                    reasoning_tokens=s.units.reasoning_tokens,
                    cost_micros=cost,
                    fee_micros=fee,
                    latency_ms=event.latency_ms,
                    ttfb_ms=event.ttfb_ms,
                    status=event.status.value,
                    http_status=event.http_status,
                    estimated=event.estimated,
                )
            )
            return event, False

    def release(self, request_id: str) -> bool:
        """Return an active reservation's budget; False if there was none."""
        _check_request_id(request_id)
        with self._engine.begin() as conn:
            lease = conn.execute(select(reservations).where(reservations.c.request_id == request_id)).first()
            if lease is None:
                return False
            self._lock_key(conn, lease.key_id)
            self._lock_account(conn, lease.account_id)
            lease = conn.execute(
                select(reservations).where(reservations.c.request_id == request_id).with_for_update()
            ).one()
            if lease.state != "active":
                return False
            conn.execute(
                reservations.update().where(reservations.c.request_id == request_id).values(state="released")
            )
            self._move(
                conn,
                lease.key_id,
                lease.account_id,
                key_reserved=-lease.amount_micros,
                wallet_reserved=-lease.wallet_micros,
            )
            return True

    def expire_stale(self) -> int:
        """Expire every lease past its TTL (the sweeper); returns keys touched."""
        now = self._clock()
        with self._engine.connect() as conn:
            key_ids = conn.scalars(
                select(reservations.c.key_id)
                .where(reservations.c.state == "active", reservations.c.expires_ms <= now)
                .distinct()
            ).all()
        for key_id in key_ids:
            with self._engine.begin() as conn:
                self._sweep_and_roll(conn, self._lock_key(conn, key_id), now)
        return len(key_ids)

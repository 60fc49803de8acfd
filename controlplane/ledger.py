"""The ledger: reserve before a request, settle or release after.

Invariants, for every key and every account, at every commit:

    key.reserved_micros     = Σ amount_micros of its `active` reservations
    account.reserved_micros = Σ wallet_micros of its keys' `active` reservations
    account.spent_micros    = Σ (cost + fee) of its usage events
    key.spent_micros        = Σ cost of its usage events settled in the current period

Every operation runs in one transaction that first locks the key row
(`SELECT … FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), so all
work on one key — and on its reservations — is serialised. The account row,
shared by all of an account's keys, is only ever touched by atomic UPDATEs
issued last in a transaction, so its lock is held for the shortest time and
always after the key's (no cycles). The key's half of admission is a pure
function of the locked row (`admit_key`); the wallet's half is a conditional
UPDATE. Every operation is idempotent by request_id: a reservation row is the
record of a Reserve, a usage_events row the record of a Settle.

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
from dataclasses import dataclass, replace

from sqlalchemy import Connection, Engine, select

from controlplane import catalog
from controlplane.errors import InvalidArgument, NotFound
from controlplane.money import Units, Unpriced, cost_micros, fee_micros
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


def admit_key(key: Key, amount: int) -> Refusal | None:
    """The key's half of the admission rule, on the locked, swept row. The
    wallet's half is a conditional UPDATE (see Ledger._hold_wallet)."""
    if key.revoked:
        return Refusal.KEY_REVOKED
    if key.cap_micros is not None:
        left = key.cap_micros - key.spent_micros - key.reserved_micros
        if left <= 0 or (key.strict and amount > left):
            return Refusal.KEY_CAP
    return None


class _WalletRefused(Exception):
    def __init__(self, key: Key) -> None:
        super().__init__(key.id)
        self.key = key


def _check_request_id(request_id: str) -> None:
    if not request_id or len(request_id) > MAX_REQUEST_ID:
        raise InvalidArgument("request_id", f"must be 1 to {MAX_REQUEST_ID} characters")


class Ledger:
    def __init__(self, engine: Engine, clock: Clock, fee_bps: int) -> None:
        self._engine = engine
        self._clock = clock
        self.fee_bps = fee_bps

    # helpers --------------------------------------------------------------

    @staticmethod
    def _lock_key(conn: Connection, key_id: str) -> Key:
        row = conn.execute(select(keys).where(keys.c.id == key_id).with_for_update()).mappings().first()
        if row is None:
            raise NotFound(f"key {key_id} not found")
        return Key.from_row(row)

    @staticmethod
    def _account(conn: Connection, account_id: str) -> Account:
        return Account.from_row(
            conn.execute(select(accounts).where(accounts.c.id == account_id)).mappings().one()
        )

    @staticmethod
    def _key(conn: Connection, key_id: str) -> Key:
        return Key.from_row(conn.execute(select(keys).where(keys.c.id == key_id)).mappings().one())

    def _sweep_and_roll(self, conn: Connection, key: Key, now: int) -> Key:
        """On the locked key: expire its stale leases and start a new cap
        period if one began; returns the fresh row."""
        stale = conn.execute(
            select(
                reservations.c.request_id, reservations.c.amount_micros, reservations.c.wallet_micros
            ).where(
                reservations.c.key_id == key.id,
                reservations.c.state == "active",
                reservations.c.expires_ms <= now,
            )
        ).all()
        if stale:
            conn.execute(
                reservations.update()
                .where(reservations.c.request_id.in_([r.request_id for r in stale]))
                .values(state="expired")
            )
            self._move_key(conn, key.id, reserved=-sum(r.amount_micros for r in stale))
            self._move_wallet(conn, key.account_id, reserved=-sum(r.wallet_micros for r in stale))
            log.info("expired %d reservation(s) of key %s", len(stale), key.id)
        start = bounds(key.cap_period, now)[0]
        if start > key.period_start_ms:
            conn.execute(
                keys.update().where(keys.c.id == key.id).values(spent_micros=0, period_start_ms=start)
            )
        return self._key(conn, key.id) if stale or start > key.period_start_ms else key

    @staticmethod
    def _move_key(conn: Connection, key_id: str, reserved: int = 0, spent: int = 0) -> None:
        conn.execute(
            keys.update()
            .where(keys.c.id == key_id)
            .values(
                reserved_micros=keys.c.reserved_micros + reserved, spent_micros=keys.c.spent_micros + spent
            )
        )

    @staticmethod
    def _move_wallet(conn: Connection, account_id: str, reserved: int = 0, spent: int = 0) -> None:
        """Always the last write of a transaction that has one: the account row
        is shared by all of an account's keys, so its lock is held briefly."""
        conn.execute(
            accounts.update()
            .where(accounts.c.id == account_id)
            .values(
                reserved_micros=accounts.c.reserved_micros + reserved,
                spent_micros=accounts.c.spent_micros + spent,
            )
        )

    @staticmethod
    def _hold_wallet(conn: Connection, account_id: str, amount: int, strict: bool) -> bool:
        """The wallet's half of admission as one atomic conditional UPDATE."""
        left = accounts.c.credit_micros - accounts.c.spent_micros - accounts.c.reserved_micros
        done = conn.execute(
            accounts.update()
            .where(accounts.c.id == account_id, left >= amount if strict else left > 0)
            .values(reserved_micros=accounts.c.reserved_micros + amount)
        )
        return done.rowcount == 1

    # operations -----------------------------------------------------------

    def reserve(self, key_id: str, request_id: str, amount_micros: int, ttl_ms: int = 0) -> Reservation:
        _check_request_id(request_id)
        if amount_micros < 0:
            raise InvalidArgument("amount_micros", "must not be negative")
        if ttl_ms < 0 or ttl_ms > MAX_TTL_MS:
            raise InvalidArgument("ttl_ms", f"must be between 0 and {MAX_TTL_MS}")
        now = self._clock()
        wallet_amount = amount_micros + fee_micros(amount_micros, self.fee_bps)
        try:
            with self._engine.begin() as conn:
                key = self._sweep_and_roll(conn, self._lock_key(conn, key_id), now)
                existing = conn.execute(
                    select(reservations).where(reservations.c.request_id == request_id)
                ).first()
                if existing is not None:
                    if existing.key_id != key_id:
                        raise InvalidArgument("request_id", "already used for another key")
                    return self._outcome(
                        key, self._account(conn, key.account_id), None, existing.expires_ms, now
                    )
                refusal = admit_key(key, amount_micros)
                if refusal is not None:
                    return self._outcome(key, self._account(conn, key.account_id), refusal, 0, now)
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
                self._move_key(conn, key_id, reserved=amount_micros)
                # Last, so the shared account row is locked only until the commit right after.
                if not self._hold_wallet(conn, key.account_id, wallet_amount, key.strict):
                    raise _WalletRefused(key)
                held = replace(key, reserved_micros=key.reserved_micros + amount_micros)
                return self._outcome(held, self._account(conn, key.account_id), None, expires, now)
        except _WalletRefused as refused:  # rolled back: nothing was held
            with self._engine.connect() as conn:
                account = self._account(conn, refused.key.account_id)
            return self._outcome(refused.key, account, Refusal.WALLET, 0, now)

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
            key = self._sweep_and_roll(conn, key, now)
            # Every operation on a reservation first locks its key, so no row lock is needed here.
            lease = conn.execute(
                select(reservations).where(reservations.c.request_id == s.request_id)
            ).first()
            if lease is not None and lease.key_id != s.key_id:
                raise InvalidArgument("request_id", "reserved for another key")
            try:
                cost = cost_micros(s.units, price)
            except Unpriced as exc:
                raise InvalidArgument("units", str(exc)) from None
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
                    **vars(s.units),
                    cost_micros=cost,
                    fee_micros=fee,
                    latency_ms=event.latency_ms,
                    ttfb_ms=event.ttfb_ms,
                    status=event.status.value,
                    http_status=event.http_status,
                    estimated=event.estimated,
                )
            )
            self._move_key(conn, key.id, reserved=-held, spent=cost)
            self._move_wallet(conn, key.account_id, reserved=-wallet_held, spent=cost + fee)
            return event, False

    def release(self, request_id: str) -> bool:
        """Return an active reservation's budget; False if there was none."""
        _check_request_id(request_id)
        with self._engine.begin() as conn:
            lease = conn.execute(select(reservations).where(reservations.c.request_id == request_id)).first()
            if lease is None:
                return False
            self._lock_key(conn, lease.key_id)
            lease = conn.execute(select(reservations).where(reservations.c.request_id == request_id)).one()
            if lease.state != "active":
                return False
            conn.execute(
                reservations.update().where(reservations.c.request_id == request_id).values(state="released")
            )
            self._move_key(conn, lease.key_id, reserved=-lease.amount_micros)
            self._move_wallet(conn, lease.account_id, reserved=-lease.wallet_micros)
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

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
after expiry still charges the actual cost: usage that happened is billed.

A grant is a reservation that a data-plane worker holds for many requests:
granted only if it fits whole (and at most a quarter of what is left), so
requests admitted against it — each only if its estimate fits what is left of
the block — never overrun the cap. A Settle naming the grant moves its cost
from the grant's amount to spent; a partial Release hands back the block's
unused part; a full Release or expiry ends it.

A rate-limited key's requests also take from its rate buckets in the same
transactions (ratelimits.py): Reserve takes one request, its token estimate and a
slot, after the cap admits it and before the wallet is held; a grant takes a slice;
settling corrects the estimate to the usage and frees the slot, a release gives back
what the reservation held (a grant: its slots and the unused slice the worker
reports), an expiry its slots.

A settle batch hands what it moved to the ledger's SpendObserver (alerts.Alerts: the
threshold webhooks' outbox) last, inside the same transaction, so an event exists if and
only if the spend that caused it committed. Reserve, the hot path, calls no observer."""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, Row, select

from controlplane import catalog, ratelimits
from controlplane.errors import InvalidArgument, NotFound
from controlplane.money import Price, Units, Unpriced, fee_micros, priced
from controlplane.periods import bounds
from controlplane.ratelimits import NOTHING, Ask
from controlplane.records import Account, Clock, EventStatus, Key, UsageEvent
from controlplane.store.schema import accounts, keys, reservations, usage_events
from spendgate.contract import token_count

log = logging.getLogger(__name__)

DEFAULT_TTL_MS = 10 * 60 * 1000
MAX_TTL_MS = 24 * 60 * 60 * 1000
MAX_REQUEST_ID = 100
GRANT_SHARE = 4  # a grant is at most 1/GRANT_SHARE of what the key and the wallet have left


class Refusal(enum.Enum):
    KEY_CAP = "key_cap"
    WALLET = "wallet"
    KEY_REVOKED = "key_revoked"
    KEY_EXPIRED = "key_expired"
    RATE_LIMIT = "rate_limit"


class SettleRefusal(enum.Enum):
    """Why a settlement was not taken (proto SettleRefusal)."""

    UNKNOWN_KEY = "unknown_key"
    UNKNOWN_MODEL = "unknown_model"
    UNPRICED_UNIT = "unpriced_unit"
    CONFLICT = "conflict"
    INVALID = "invalid"


@dataclass(frozen=True)
class Reservation:
    granted: bool
    refusal: Refusal | None
    key: Key
    wallet_remaining_micros: int
    period_reset_ms: int
    expires_ms: int
    rate: ratelimits.Status | None = None  # for a rate-limited key


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
    grant_id: str = ""
    service_tier: str = ""


@dataclass(frozen=True)
class Settled:
    """One settlement's outcome: the event (and whether it was a replay), or why it was refused."""

    request_id: str
    event: UsageEvent | None = None
    duplicate: bool = False
    error: InvalidArgument | NotFound | None = None
    refusal: SettleRefusal | None = None
    key_remaining_micros: int | None = None  # the key's cap less its spend and holds, once committed


class _Refused(Exception):
    def __init__(self, refusal: SettleRefusal, error: InvalidArgument | NotFound) -> None:
        super().__init__(str(error))
        self.refusal = refusal
        self.error = error


@dataclass(frozen=True)
class Granted:
    granted: bool
    amount_micros: int
    expires_ms: int
    slice: Ask = NOTHING  # of the key's rate limits
    rate: ratelimits.Status | None = None


def admit_key(key: Key, amount: int, now_ms: int) -> Refusal | None:
    """The key's half of the admission rule, on the locked, swept row. The
    wallet's half is a conditional UPDATE (see Ledger._hold_wallet)."""
    if key.revoked:
        return Refusal.KEY_REVOKED
    if key.expired(now_ms):
        return Refusal.KEY_EXPIRED
    if key.cap_micros is not None:
        left = key.cap_micros - key.spent_micros - key.reserved_micros
        if left <= 0 or (key.strict and amount > left):
            return Refusal.KEY_CAP
    return None


class _WalletRefused(Exception):
    def __init__(self, key: Key) -> None:
        super().__init__(key.id)
        self.key = key


def _event_row(e: UsageEvent, account_id: str) -> dict[str, object]:
    return {
        "request_id": e.request_id,
        "key_id": e.key_id,
        "account_id": account_id,
        "ts_ms": e.ts_ms,
        "provider": e.provider,
        "model": e.model,
        **vars(e.units),
        "cost_micros": e.cost_micros,
        "fee_micros": e.fee_micros,
        "latency_ms": e.latency_ms,
        "ttfb_ms": e.ttfb_ms,
        "status": e.status.value,
        "http_status": e.http_status,
        "estimated": e.estimated,
        "service_tier": e.service_tier,
        "price_rules": e.price_rules,
    }


def _check_ttl(ttl_ms: int) -> None:
    if ttl_ms < 0 or ttl_ms > MAX_TTL_MS:
        raise InvalidArgument("ttl_ms", f"must be between 0 and {MAX_TTL_MS}")


def _check_request_id(request_id: str) -> None:
    if not request_id or len(request_id) > MAX_REQUEST_ID:
        raise InvalidArgument("request_id", f"must be 1 to {MAX_REQUEST_ID} characters")


class SpendObserver(Protocol):
    """Sees each settle batch's moves inside its transaction, after the account rows are
    updated (and so locked): `keys_before` are the locked keys as the batch found them,
    `key_spent` / `wallet_spent` what it added to their spend."""

    def record(
        self,
        conn: Connection,
        keys_before: Mapping[str, Key],
        key_spent: Mapping[str, int],
        wallet_spent: Mapping[str, int],
        now_ms: int,
    ) -> int: ...


class Ledger:
    def __init__(
        self, engine: Engine, clock: Clock, fee_bps: int, observer: SpendObserver | None = None
    ) -> None:
        self._engine = engine
        self._clock = clock
        self.fee_bps = fee_bps
        self._observer = observer

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
                reservations.c.request_id,
                reservations.c.amount_micros,
                reservations.c.wallet_micros,
                reservations.c.slots,
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
            self._give_rate(conn, key, now, slots=sum(r.slots for r in stale))  # a dead worker's slots
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
    def _give_rate(
        conn: Connection, key: Key, now: int, requests: int = 0, tokens: int = 0, slots: int = 0
    ) -> None:
        """What an ended reservation held of its key's rate limits goes back (ratelimits.py)."""
        if key.limits.any and (requests or tokens or slots):
            bucket = ratelimits.load(conn, key.id, key.limits, now)
            ratelimits.save(conn, key.id, ratelimits.give(bucket, key.limits, requests, tokens, slots))

    @staticmethod
    def _move_wallet(conn: Connection, account_id: str, reserved: int = 0, spent: int = 0) -> None:
        """Always the last write of a transaction that has one (but for the outbox rows of
        a settle's alerts, which need the updated row): the account row is shared by all
        of an account's keys, so its lock is held briefly."""
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

    @staticmethod
    def _renew(conn: Connection, lease: Row[Any], now: int, ttl_ms: int) -> int:
        """An active lease asked for again runs for another TTL from now (never shorter):
        a request or a grant that outlives its first TTL (a long stream) keeps holding
        what it may cost, instead of handing it back to the key while it still runs."""
        if lease.state != "active":
            return int(lease.expires_ms)
        expires = max(int(lease.expires_ms), now + (ttl_ms or DEFAULT_TTL_MS))
        if expires != lease.expires_ms:
            conn.execute(
                reservations.update()
                .where(reservations.c.request_id == lease.request_id, reservations.c.state == "active")
                .values(expires_ms=expires)
            )
        return expires

    @staticmethod
    def _existing(conn: Connection, request_id: str, key_id: str, field: str) -> Row[Any] | None:
        """The reservation already made under this id (a replay), if any; for the same key only."""
        existing = conn.execute(select(reservations).where(reservations.c.request_id == request_id)).first()
        if existing is not None and existing.key_id != key_id:
            raise InvalidArgument(field, "already used for another key")
        return existing

    def _hold(
        self,
        conn: Connection,
        key: Key,
        request_id: str,
        amount: int,
        wallet_amount: int,
        now: int,
        expires: int,
        strict: bool,
        rate: Ask = NOTHING,
    ) -> None:
        """Record an active reservation and hold it on the key, then on the
        wallet (raises _WalletRefused, which rolls the transaction back)."""
        conn.execute(
            reservations.insert().values(
                request_id=request_id,
                key_id=key.id,
                account_id=key.account_id,
                amount_micros=amount,
                wallet_micros=wallet_amount,
                state="active",
                created_ms=now,
                expires_ms=expires,
                requests=rate.requests,
                tokens=rate.tokens,
                slots=rate.slots,
            )
        )
        self._move_key(conn, key.id, reserved=amount)
        # Last, so the shared account row is locked only until the commit right after.
        if not self._hold_wallet(conn, key.account_id, wallet_amount, strict):
            raise _WalletRefused(key)

    # operations -----------------------------------------------------------

    def reserve(
        self,
        key_id: str,
        request_id: str,
        amount_micros: int,
        ttl_ms: int = 0,
        return_grant_id: str = "",
        return_micros: int = 0,
        tokens: int = 0,
    ) -> Reservation:
        """Hold amount_micros for request_id, or refuse. With return_grant_id,
        first hand back return_micros of that grant (the caller's unused part),
        in the same transaction. A rate-limited key's request also takes one
        request, `tokens` (its estimate) and a slot in flight, or is refused."""
        _check_request_id(request_id)
        if amount_micros < 0:
            raise InvalidArgument("amount_micros", "must not be negative")
        if tokens < 0:
            raise InvalidArgument("tokens", "must not be negative")
        if return_micros < 0:
            raise InvalidArgument("return_micros", "must not be negative")
        _check_ttl(ttl_ms)
        now = self._clock()
        wallet_amount = amount_micros + fee_micros(amount_micros, self.fee_bps)
        try:
            with self._engine.begin() as conn:
                key = self._sweep_and_roll(conn, self._lock_key(conn, key_id), now)
                existing = self._existing(conn, request_id, key_id, "request_id")
                bucket = ratelimits.load(conn, key.id, key.limits, now) if key.limits.any else None
                if existing is not None:  # a replay; from the worker holding it, a renewal of its lease
                    rate = None if bucket is None else ratelimits.status(bucket, key.limits)
                    account = self._account(conn, key.account_id)
                    expires = self._renew(conn, existing, now, ttl_ms)
                    return self._outcome(key, account, None, expires, now, rate)
                if return_grant_id and return_micros:
                    key = self._hand_back(conn, key, return_grant_id, return_micros)
                refusal = admit_key(key, amount_micros, now)
                if refusal is not None:
                    return self._outcome(key, self._account(conn, key.account_id), refusal, 0, now)
                ask, rate = Ask(), None
                if bucket is not None:  # the money admits it: now the rate limits
                    ask = Ask(1, min(tokens, ratelimits.MAX_LIMIT), 1)  # (more than any minute holds)
                    limited = ratelimits.refusal(bucket, key.limits, ask)
                    if limited is not None:
                        rate = ratelimits.status(bucket, key.limits, limited)
                        account = self._account(conn, key.account_id)
                        return self._outcome(key, account, Refusal.RATE_LIMIT, 0, now, rate)
                    bucket = ratelimits.take(bucket, ask)
                    ratelimits.save(conn, key.id, bucket)
                    rate = ratelimits.status(bucket, key.limits)
                expires = now + (ttl_ms or DEFAULT_TTL_MS)
                self._hold(conn, key, request_id, amount_micros, wallet_amount, now, expires, key.strict, ask)
                held = replace(key, reserved_micros=key.reserved_micros + amount_micros)
                return self._outcome(held, self._account(conn, key.account_id), None, expires, now, rate)
        except _WalletRefused as refused:  # rolled back: nothing was held
            with self._engine.connect() as conn:
                account = self._account(conn, refused.key.account_id)
            return self._outcome(refused.key, account, Refusal.WALLET, 0, now)

    @staticmethod
    def _outcome(
        key: Key,
        account: Account,
        refusal: Refusal | None,
        expires: int,
        now: int,
        rate: ratelimits.Status | None = None,
    ) -> Reservation:
        return Reservation(
            granted=refusal is None,
            refusal=refusal,
            key=key,
            wallet_remaining_micros=max(0, account.remaining_micros),
            period_reset_ms=key.period_reset_ms(now),
            expires_ms=expires,
            rate=rate,
        )

    def grant(
        self,
        key_id: str,
        grant_id: str,
        want_micros: int,
        min_micros: int,
        ttl_ms: int = 0,
        want_slice: Ask = NOTHING,
        min_slice: Ask = NOTHING,
    ) -> Granted:
        """Hold a block of between min_micros and want_micros for a worker:
        at most 1/GRANT_SHARE of what the key and the wallet have left, and
        only if it fits whole; for a rate-limited key, with a slice of its limits
        (ratelimits.slice_of), or nothing. Idempotent by grant_id."""
        _check_request_id(grant_id)
        if min_micros <= 0:
            raise InvalidArgument("min_micros", "must be positive")
        if want_micros < min_micros:
            raise InvalidArgument("want_micros", "must not be less than min_micros")
        _check_ttl(ttl_ms)
        now = self._clock()
        refused = Granted(False, 0, 0)
        try:
            with self._engine.begin() as conn:
                key = self._sweep_and_roll(conn, self._lock_key(conn, key_id), now)
                existing = self._existing(conn, grant_id, key_id, "grant_id")
                if existing is not None:  # a replay; from the worker holding it, a renewal of its lease
                    if existing.state != "active":
                        return refused
                    again = Ask(existing.requests, existing.tokens, existing.slots)
                    expires = self._renew(conn, existing, now, ttl_ms)
                    return Granted(True, existing.amount_micros, expires, again)
                if key.revoked or key.expired(now):
                    return refused
                wallet_left = self._account(conn, key.account_id).remaining_micros
                amount = min(want_micros, wallet_left // GRANT_SHARE * 10_000 // (10_000 + self.fee_bps))
                if key.cap_micros is not None:
                    amount = min(
                        amount, (key.cap_micros - key.spent_micros - key.reserved_micros) // GRANT_SHARE
                    )
                if amount < min_micros:
                    return refused
                share, rate = Ask(), None
                if key.limits.any:
                    bucket = ratelimits.load(conn, key.id, key.limits, now)
                    cut = ratelimits.slice_of(bucket, key.limits, want_slice, min_slice)
                    if cut is None:
                        return refused
                    share = cut
                    bucket = ratelimits.take(bucket, share)
                    ratelimits.save(conn, key.id, bucket)
                    rate = ratelimits.status(bucket, key.limits)
                wallet_amount = amount + fee_micros(amount, self.fee_bps)
                expires = now + (ttl_ms or DEFAULT_TTL_MS)
                self._hold(conn, key, grant_id, amount, wallet_amount, now, expires, True, share)
                return Granted(True, amount, expires, share, rate)
        except _WalletRefused:
            return refused

    def settle(self, s: Settlement) -> tuple[UsageEvent, bool]:
        """Price and record a finished request; returns (event, duplicate)."""
        (outcome,) = self.settle_many([s])
        if outcome.error is not None:
            raise outcome.error
        assert outcome.event is not None
        return outcome.event, outcome.duplicate

    def settle_many(self, batch: Sequence[Settlement]) -> list[Settled]:
        """Settle many requests in one transaction. Keys are locked in id
        order, in one statement, so concurrent batches cannot deadlock; the
        events go in with one INSERT; each key's and account's totals move
        once, the accounts last. A refused item is left out, the rest commit."""
        outcomes: dict[int, Settled] = {}
        todo: list[tuple[int, Settlement]] = []
        for i, s in enumerate(batch):
            try:
                _check_request_id(s.request_id)
                if not s.key_id:
                    raise InvalidArgument("key_id", "must not be empty")
            except InvalidArgument as exc:
                outcomes[i] = Settled(s.request_id, error=exc, refusal=SettleRefusal.INVALID)
            else:
                todo.append((i, s))
        if todo:
            with self._engine.begin() as conn:
                outcomes.update(self._settle_locked(conn, todo, self._clock()))
        return [outcomes[i] for i in range(len(batch))]

    def _settle_locked(
        self, conn: Connection, todo: list[tuple[int, Settlement]], now: int
    ) -> dict[int, Settled]:
        rows = conn.execute(
            select(keys)
            .where(keys.c.id.in_(sorted({s.key_id for _, s in todo})))
            .order_by(keys.c.id)
            .with_for_update()
        ).mappings()
        locked = {key.id: self._sweep_and_roll(conn, key, now) for key in map(Key.from_row, rows)}
        previous = {
            row["request_id"]: UsageEvent.from_row(row)
            for row in conn.execute(
                select(usage_events).where(usage_events.c.request_id.in_([s.request_id for _, s in todo]))
            ).mappings()
        }
        # Every operation on a reservation first locks its key, so no row lock is needed here.
        leases = {
            row.request_id: row
            for row in conn.execute(
                select(reservations).where(
                    reservations.c.request_id.in_({s.grant_id or s.request_id for _, s in todo})
                )
            )
        }
        held = {
            rid: [row.amount_micros, row.wallet_micros]
            for rid, row in leases.items()
            if row.state == "active"
        }
        histories: dict[tuple[str, str], list[Price]] = {}
        out: dict[int, Settled] = {}
        events: list[tuple[UsageEvent, str]] = []
        key_moves: dict[str, list[int]] = {}  # key id -> [reserved, spent]
        wallet_moves: dict[str, list[int]] = {}  # account id -> [reserved, spent]
        for i, s in todo:
            key = locked.get(s.key_id)
            done = previous.get(s.request_id)
            lease = leases.get(s.grant_id or s.request_id)
            try:
                if key is None:
                    raise _Refused(SettleRefusal.UNKNOWN_KEY, NotFound(f"key {s.key_id} not found"))
                if done is not None:
                    if done.key_id != s.key_id:
                        raise _Refused(
                            SettleRefusal.CONFLICT,
                            InvalidArgument("request_id", "already settled for another key"),
                        )
                    out[i] = Settled(s.request_id, event=done, duplicate=True)
                    continue
                started = s.started_ms or now
                if (s.provider, s.model) not in histories:
                    histories[s.provider, s.model] = catalog.history(conn, s.provider, s.model)
                price = catalog.in_force(histories[s.provider, s.model], started)
                if price is None:
                    raise _Refused(
                        SettleRefusal.UNKNOWN_MODEL,
                        InvalidArgument("model", f"unknown model {s.provider}/{s.model}: not in the catalog"),
                    )
                if lease is not None and lease.key_id != s.key_id:
                    field = "grant_id" if s.grant_id else "request_id"
                    raise _Refused(SettleRefusal.CONFLICT, InvalidArgument(field, "reserved for another key"))
                try:
                    cost, rules = priced(s.units, price, started, s.service_tier)
                except Unpriced as exc:
                    raise _Refused(SettleRefusal.UNPRICED_UNIT, InvalidArgument("units", str(exc))) from None
            except _Refused as refused:
                out[i] = Settled(s.request_id, error=refused.error, refusal=refused.refusal)
                continue
            fee = fee_micros(cost, self.fee_bps)
            taken, wallet_taken = 0, 0
            left = held.get(lease.request_id) if lease is not None else None
            if left is not None:
                # A grant gives up what the request cost; a request's own lease all it held.
                taken = min(left[0], cost) if s.grant_id else left[0]
                wallet_taken = min(left[1], cost + fee) if s.grant_id else left[1]
                left[0] -= taken
                left[1] -= wallet_taken
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
                service_tier=s.service_tier,
                price_rules=rules,
            )
            events.append((event, key.account_id))
            previous[s.request_id] = event  # a repeat later in the batch is a duplicate
            moved = key_moves.setdefault(key.id, [0, 0])
            moved[0] -= taken
            moved[1] += cost
            moved = wallet_moves.setdefault(key.account_id, [0, 0])
            moved[0] -= wallet_taken
            moved[1] += cost + fee
            out[i] = Settled(s.request_id, event=event)
        if events:
            conn.execute(usage_events.insert(), [_event_row(e, account) for e, account in events])
        # Only the leases of settlements taken here: a refused one keeps its lease, to expire or be released.
        on_grants = {s.request_id for _, s in todo if s.grant_id}
        own = {e.request_id for e, _ in events if e.request_id in leases and e.request_id not in on_grants}
        if own:
            conn.execute(
                reservations.update().where(reservations.c.request_id.in_(own)).values(state="settled")
            )
            self._settle_rates(
                conn,
                locked,
                [
                    (leases[e.request_id], e)
                    for e, _ in events
                    if e.request_id in own and e.request_id in held
                ],
                now,
            )
        for rid, (amount, wallet) in held.items():
            if rid not in own and (amount, wallet) != (leases[rid].amount_micros, leases[rid].wallet_micros):
                conn.execute(
                    reservations.update()
                    .where(reservations.c.request_id == rid)
                    .values(amount_micros=amount, wallet_micros=wallet)
                )
        for key_id, (reserved, spent) in sorted(key_moves.items()):
            self._move_key(conn, key_id, reserved=reserved, spent=spent)
        # Last, in id order, so the shared account rows are locked only until the commit.
        for account_id, (reserved, spent) in sorted(wallet_moves.items()):
            self._move_wallet(conn, account_id, reserved=reserved, spent=spent)
        remaining: dict[str, int | None] = {}  # each key's after the batch: once a key, not a request
        for key_id, key in locked.items():
            reserved, spent = key_moves.get(key_id, (0, 0))
            after = replace(
                key, spent_micros=key.spent_micros + spent, reserved_micros=key.reserved_micros + reserved
            )
            remaining[key_id] = after.remaining_micros
        for i, settled in out.items():
            if settled.event is not None and settled.event.key_id in remaining:
                out[i] = replace(settled, key_remaining_micros=remaining[settled.event.key_id])
        if self._observer is not None and key_moves:
            self._observer.record(
                conn,
                locked,
                {k: spent for k, (_, spent) in key_moves.items()},
                {a: spent for a, (_, spent) in wallet_moves.items()},
                now,
            )
        return out

    @classmethod
    def _settle_rates(
        cls, conn: Connection, locked: Mapping[str, Key], ended: list[tuple[Row[Any], UsageEvent]], now: int
    ) -> None:
        """Settled requests of rate-limited keys free their slots, and their token estimates
        are corrected to what they used."""
        if not any(key.limits.any for key in locked.values()):
            return
        back: dict[str, list[int]] = {}  # key id -> [tokens, slots]
        for lease, event in ended:
            if locked[event.key_id].limits.any:
                moved = back.setdefault(event.key_id, [0, 0])
                if lease.tokens:  # a request that counted none (an image, speech) is not counted now
                    moved[0] += lease.tokens - token_count(event.units)
                moved[1] += lease.slots
        for key_id, (tokens, slots) in sorted(back.items()):
            cls._give_rate(conn, locked[key_id], now, tokens=tokens, slots=slots)

    def release(self, request_id: str, amount_micros: int | None = None, returned: Ask | None = None) -> bool:
        """Return an active reservation's budget, ending it; with amount_micros,
        return only that much of it (a grant's unused part) and keep it.
        What it held of a rate-limited key's limits goes back: a request's all of
        it (nothing reached the provider), a grant's slots and `returned`, the
        unused part of its slice. False if nothing was returned."""
        _check_request_id(request_id)
        if amount_micros is not None and amount_micros < 0:
            raise InvalidArgument("amount_micros", "must not be negative")
        with self._engine.begin() as conn:
            lease = conn.execute(select(reservations).where(reservations.c.request_id == request_id)).first()
            if lease is None:
                return False
            key = self._lock_key(conn, lease.key_id)
            lease = conn.execute(select(reservations).where(reservations.c.request_id == request_id)).one()
            if lease.state != "active":
                return False
            if amount_micros is not None:
                return self._shrink(conn, lease, amount_micros) > 0
            conn.execute(
                reservations.update().where(reservations.c.request_id == request_id).values(state="released")
            )
            self._move_key(conn, lease.key_id, reserved=-lease.amount_micros)
            back = returned or Ask(lease.requests, lease.tokens)
            self._give_rate(conn, key, self._clock(), back.requests, back.tokens, lease.slots)
            self._move_wallet(conn, lease.account_id, reserved=-lease.wallet_micros)
            return True

    def _shrink(self, conn: Connection, lease: Row[Any], amount_micros: int) -> int:
        """Return up to amount_micros of an active reservation on its locked key, keeping the
        reservation; returns how much."""
        amount = min(amount_micros, lease.amount_micros)
        if amount == 0:
            return 0
        wallet = min(lease.wallet_micros, amount + fee_micros(amount, self.fee_bps))
        conn.execute(
            reservations.update()
            .where(reservations.c.request_id == lease.request_id)
            .values(
                amount_micros=reservations.c.amount_micros - amount,
                wallet_micros=reservations.c.wallet_micros - wallet,
            )
        )
        self._move_key(conn, lease.key_id, reserved=-amount)
        self._move_wallet(conn, lease.account_id, reserved=-wallet)
        return int(amount)

    def _hand_back(self, conn: Connection, key: Key, grant_id: str, amount_micros: int) -> Key:
        """A grant's unused part, returned inside a Reserve on the same, locked key."""
        lease = conn.execute(select(reservations).where(reservations.c.request_id == grant_id)).first()
        if lease is None or lease.key_id != key.id or lease.state != "active":
            return key
        return replace(key, reserved_micros=key.reserved_micros - self._shrink(conn, lease, amount_micros))

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

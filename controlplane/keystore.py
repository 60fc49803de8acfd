"""Accounts and keys: create, read, page, update, revoke, look up by secret
digest, and the change log that WatchKeys streams.

Every key mutation writes a `key_changes` row in the same transaction, so a
watcher on any control-plane process sees every change (see watch.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, or_, select

from controlplane import lifecycle, ratelimits, secrets
from controlplane.errors import InvalidArgument, NotFound
from controlplane.lifecycle import SecretMatch
from controlplane.periods import CapPeriod, bounds
from controlplane.records import Account, Clock, Key, Page, Scope
from controlplane.store.schema import accounts, key_changes, keys, rate_buckets

MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_NAME = 200
INT64_MAX = 2**63 - 1  # the database's BIGINT and the protobuf int64 fields


@dataclass(frozen=True)
class KeySpec:
    name: str
    scope: Scope = Scope.STANDARD
    cap_micros: int | None = None
    cap_period: CapPeriod = CapPeriod.LIFETIME
    strict: bool = False
    allowed_models: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()
    expires_ms: int | None = None
    limits: ratelimits.Limits = ratelimits.NO_LIMITS


@dataclass(frozen=True)
class KeyUpdate:
    name: str | None = None
    cap_micros: int | None = None
    remove_cap: bool = False
    cap_period: CapPeriod | None = None
    strict: bool | None = None
    allowed_models: tuple[str, ...] | None = None
    expires_ms: int | None = None
    remove_expiry: bool = False
    metadata: tuple[tuple[str, str], ...] | None = None  # replaces the whole map
    limits: ratelimits.Limits = ratelimits.NO_LIMITS  # those set change; 0 removes one


@dataclass(frozen=True)
class KeyChange:
    seq: int
    kind: str
    key: Key


def check_name(name: str, field: str = "name") -> str:
    name = name.strip()
    if not name:
        raise InvalidArgument(field, "must not be empty")
    if len(name) > MAX_NAME:
        raise InvalidArgument(field, f"must be at most {MAX_NAME} characters")
    return name


def check_cap(cap_micros: int | None, field: str = "cap_micros") -> None:
    if cap_micros is not None and cap_micros < 0:
        raise InvalidArgument(field, "must not be negative")


def check_models(models: Sequence[str], field: str = "allowed_models") -> tuple[str, ...]:
    if any(not m.strip() for m in models):
        raise InvalidArgument(field, "model names must not be empty")
    return tuple(dict.fromkeys(m.strip() for m in models))


def page_size(requested: int, field: str = "page_size") -> int:
    if requested < 0:
        raise InvalidArgument(field, "must not be negative")
    return min(requested or DEFAULT_PAGE, MAX_PAGE)


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(str(seq).encode()).decode()


def decode_cursor(token: str, field: str = "page_token") -> int | None:
    if not token:
        return None
    try:
        seq = int(base64.urlsafe_b64decode(token.encode()).decode())
    except ValueError:
        seq = -1
    if not 0 <= seq <= INT64_MAX:  # a forged number would overflow the query's BIGINT
        raise InvalidArgument(field, "is not a token this server issued")
    return seq


class KeyStore:
    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    def now(self) -> int:
        return self._clock()

    # accounts -------------------------------------------------------------

    def create_account(self, name: str, credit_micros: int) -> tuple[Account, Key, str]:
        name = check_name(name)
        if credit_micros < 0:
            raise InvalidArgument("initial_credit_micros", "must not be negative")
        now = self._clock()
        account_id = secrets.new_id("acct")
        with self._engine.begin() as conn:
            conn.execute(
                accounts.insert().values(
                    id=account_id,
                    name=name,
                    created_ms=now,
                    credit_micros=credit_micros,
                    spent_micros=0,
                    reserved_micros=0,
                )
            )
            key, secret = self._insert_key(conn, account_id, KeySpec(name="master", scope=Scope.MASTER), now)
            account = self._account(conn, account_id)
        return account, key, secret

    def credit(self, account_id: str, amount_micros: int) -> Account:
        if amount_micros <= 0:
            raise InvalidArgument("amount_micros", "must be positive")
        with self._engine.begin() as conn:
            done = conn.execute(
                accounts.update()
                # The sum must fit the BIGINT (SQLite would turn it into a float, PostgreSQL fail).
                .where(accounts.c.id == account_id, accounts.c.credit_micros <= INT64_MAX - amount_micros)
                .values(credit_micros=accounts.c.credit_micros + amount_micros)
            )
            account = self._account(conn, account_id)  # NotFound if there is none
            if done.rowcount == 0:
                raise InvalidArgument(
                    "amount_micros", f"would take the account's credit past {INT64_MAX} micro-USD"
                )
            return account

    def account(self, account_id: str) -> Account:
        with self._engine.connect() as conn:
            return self._account(conn, account_id)

    @staticmethod
    def _account(conn: Connection, account_id: str) -> Account:
        row = conn.execute(select(accounts).where(accounts.c.id == account_id)).mappings().first()
        if row is None:
            raise NotFound(f"account {account_id} not found")
        return Account.from_row(row)

    # keys -----------------------------------------------------------------

    def create_key(self, account_id: str, spec: KeySpec) -> tuple[Key, str]:
        now = self._clock()
        spec = KeySpec(
            name=check_name(spec.name),
            scope=spec.scope,
            cap_micros=spec.cap_micros,
            cap_period=spec.cap_period,
            strict=spec.strict,
            allowed_models=check_models(spec.allowed_models),
            metadata=tuple(lifecycle.check_metadata(dict(spec.metadata)).items()),
            expires_ms=lifecycle.check_expiry(spec.expires_ms, now),
            limits=ratelimits.check(spec.limits),
        )
        check_cap(spec.cap_micros)
        with self._engine.begin() as conn:
            return self._insert_key(conn, account_id, spec, now)

    def _insert_key(self, conn: Connection, account_id: str, spec: KeySpec, now: int) -> tuple[Key, str]:
        secret = secrets.mint_secret()
        key_id = secrets.new_id("key")
        conn.execute(
            keys.insert().values(
                id=key_id,
                account_id=account_id,
                name=spec.name,
                scope=spec.scope.value,
                secret_sha256=secrets.digest(secret),
                secret_prefix=secret[: secrets.DISPLAY_CHARS],
                cap_micros=spec.cap_micros,
                cap_period=spec.cap_period.value,
                strict=spec.strict,
                allowed_models=json.dumps(list(spec.allowed_models)),
                metadata=json.dumps(dict(spec.metadata), sort_keys=True),
                created_ms=now,
                revoked_ms=None,
                spent_micros=0,
                reserved_micros=0,
                period_start_ms=bounds(spec.cap_period, now)[0],
                expires_ms=spec.expires_ms,
                rpm_limit=spec.limits.rpm,
                tpm_limit=spec.limits.tpm,
                max_parallel_requests=spec.limits.parallel,
            )
        )
        record_change(conn, key_id, "created", now)
        return self._key(conn, key_id, account_id), secret

    def get_key(self, account_id: str, key_id: str) -> Key:
        with self._engine.connect() as conn:
            return self._key(conn, key_id, account_id)

    @staticmethod
    def _key(conn: Connection, key_id: str, account_id: str | None) -> Key:
        query = select(keys).where(keys.c.id == key_id)
        if account_id is not None:
            query = query.where(keys.c.account_id == account_id)
        row = conn.execute(query).mappings().first()
        if row is None:
            # The same answer whether the key is missing or another account's.
            raise NotFound(f"key {key_id} not found")
        return Key.from_row(row)

    def list_keys(self, account_id: str, size: int, token: str, include_revoked: bool) -> Page[Key]:
        limit = page_size(size)
        after = decode_cursor(token)
        query = select(keys).where(keys.c.account_id == account_id)
        if after is not None:
            query = query.where(keys.c.seq > after)
        if not include_revoked:
            query = query.where(keys.c.revoked_ms.is_(None))
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(keys.c.seq).limit(limit + 1)).mappings().all()
        items = [Key.from_row(r) for r in rows[:limit]]
        next_token = encode_cursor(rows[limit - 1]["seq"]) if len(rows) > limit else ""
        return Page(items, next_token)

    def update_key(self, account_id: str, key_id: str, update: KeyUpdate) -> Key:
        values: dict[str, Any] = {}
        if update.name is not None:
            values["name"] = check_name(update.name)
        if update.remove_cap and update.cap_micros is not None:
            raise InvalidArgument("remove_cap", "cannot be combined with cap_micros")
        if update.cap_micros is not None:
            check_cap(update.cap_micros)
            values["cap_micros"] = update.cap_micros
        if update.remove_cap:
            values["cap_micros"] = None
        if update.strict is not None:
            values["strict"] = update.strict
        if update.allowed_models is not None:
            values["allowed_models"] = json.dumps(list(check_models(update.allowed_models)))
        if update.metadata is not None:
            values["metadata"] = json.dumps(lifecycle.check_metadata(dict(update.metadata)))
        now = self._clock()
        if update.remove_expiry and update.expires_ms is not None:
            raise InvalidArgument("remove_expiry", "cannot be combined with expires_ms")
        if update.expires_ms is not None:
            values["expires_ms"] = lifecycle.check_expiry(update.expires_ms, now)
        if update.remove_expiry:
            values["expires_ms"] = None
        with self._engine.begin() as conn:
            current = self._key_for_update(conn, key_id, account_id)
            if current.revoked:
                raise InvalidArgument("key_id", f"key {key_id} is revoked")
            if update.limits != ratelimits.NO_LIMITS:
                limits = ratelimits.updated(current.limits, ratelimits.check(update.limits, removing=True))
                values.update(
                    rpm_limit=limits.rpm, tpm_limit=limits.tpm, max_parallel_requests=limits.parallel
                )
                if not limits.any:  # its counts would go stale unwatched: a limit set later starts afresh
                    conn.execute(rate_buckets.delete().where(rate_buckets.c.key_id == key_id))
            if update.cap_period is not None and update.cap_period is not current.cap_period:
                # A new period starts now: spend so far belonged to the old one.
                values["cap_period"] = update.cap_period.value
                values["period_start_ms"] = bounds(update.cap_period, now)[0]
                values["spent_micros"] = 0
            if values:
                conn.execute(keys.update().where(keys.c.id == key_id).values(**values))
                record_change(conn, key_id, "updated", now)
            return self._key(conn, key_id, account_id)

    def rotate_key(self, account_id: str, key_id: str, grace_ms: int | None) -> tuple[Key, str]:
        """A new secret for the same key; the current one keeps working for `grace_ms`
        (see lifecycle.py). The secret before it, if still in its grace, stops now."""
        grace = lifecycle.check_grace(grace_ms)
        now = self._clock()
        secret = secrets.mint_secret()
        with self._engine.begin() as conn:
            current = self._key_for_update(conn, key_id, account_id)
            if current.revoked:
                raise InvalidArgument("key_id", f"key {key_id} is revoked")
            if current.expired(now):
                raise InvalidArgument("key_id", f"key {key_id} has expired; give it a new expires_ms first")
            conn.execute(
                keys.update()
                .where(keys.c.id == key_id)
                .values(
                    secret_sha256=secrets.digest(secret),
                    secret_prefix=secret[: secrets.DISPLAY_CHARS],
                    old_secret_sha256=current.secret_sha256 if grace else None,
                    old_secret_expires_ms=now + grace if grace else None,
                    rotated_ms=now,
                )
            )
            record_change(conn, key_id, "rotated", now)
            return self._key(conn, key_id, account_id), secret

    def revoke_key(self, account_id: str, key_id: str) -> Key:
        now = self._clock()
        with self._engine.begin() as conn:
            current = self._key_for_update(conn, key_id, account_id)
            if not current.revoked:
                conn.execute(keys.update().where(keys.c.id == key_id).values(revoked_ms=now))
                record_change(conn, key_id, "revoked", now)
            return self._key(conn, key_id, account_id)

    def _key_for_update(self, conn: Connection, key_id: str, account_id: str) -> Key:
        row = (
            conn.execute(
                select(keys).where(keys.c.id == key_id, keys.c.account_id == account_id).with_for_update()
            )
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound(f"key {key_id} not found")
        return Key.from_row(row)

    def lookup(self, secret_sha256: bytes) -> Key | None:
        found = self.find(secret_sha256)
        return None if found is None else found.key

    def find(self, secret_sha256: bytes) -> SecretMatch | None:
        """The key whose secret, or whose rotated-out secret, has this digest. The indexes
        find the row; the final comparison is constant-time. Whether the secret may be used
        now is the caller's decision (SecretMatch.refusal)."""
        query = select(keys).where(
            or_(keys.c.secret_sha256 == secret_sha256, keys.c.old_secret_sha256 == secret_sha256)
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            return None
        key = Key.from_row(row)
        if secrets.same_digest(key.secret_sha256, secret_sha256):
            return SecretMatch(key)
        if key.old_secret_sha256 is not None and secrets.same_digest(key.old_secret_sha256, secret_sha256):
            return SecretMatch(key, key.old_secret_expires_ms)
        return None

    # change log -----------------------------------------------------------

    def head_seq(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(key_changes.c.seq), 0))).scalar_one())

    def changes_after(self, after_seq: int, limit: int = 500, newer_than_ms: int = 0) -> list[KeyChange]:
        query = (
            select(key_changes.c.seq.label("change_seq"), key_changes.c.kind, keys)
            .join(keys, keys.c.id == key_changes.c.key_id)
            .where(key_changes.c.seq > after_seq, key_changes.c.created_ms >= newer_than_ms)
            .order_by(key_changes.c.seq)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [KeyChange(seq=r["change_seq"], kind=r["kind"], key=Key.from_row(r)) for r in rows]


def record_change(conn: Connection, key_id: str, kind: str, now: int) -> None:
    conn.execute(key_changes.insert().values(key_id=key_id, kind=kind, created_ms=now))

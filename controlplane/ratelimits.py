"""Per-key rate limits: requests per minute, tokens per minute, requests in flight.

The control plane's database is the only counter, as it is for caps: every data-plane
worker admits against it, in the Reserve that locks the key's row anyway, or against a
*slice* of it that a grant holds (budget.py), so what all workers together may admit
never exceeds the limit.

Requests and tokens are token buckets (the GCRA's equivalent), one row per limited key
in `rate_buckets`. A bucket holds at most a minute's allowance (`limit`) and refills
continuously at `limit` per minute; a request takes one from the requests bucket and
its token estimate from the tokens bucket. Levels are integers scaled by MINUTE_MS (one
request or token is MINUTE_MS units and a bucket refills `limit` units a millisecond),
so refills and waits are exact. The tokens bucket may go below zero: a request whose
real usage exceeded its estimate is in debt, which the next requests wait out. A
request whose estimate is larger than the whole minute (a body with no `max_tokens` on
a model with a large output) is admitted only into a full bucket, alone, so it is
never refused for good. docs/rate-limits.md says why a bucket and not a fixed window.

In flight is a count: every active reservation of a limited key holds its `slots`
(one for a request, a grant's share for a grant) until it is settled, released or
expires, so a dead worker's slots come back with its lease.

A dimension without a limit reads as FULL, so a limit set later starts full."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from sqlalchemy import Connection, select

from controlplane.errors import InvalidArgument
from controlplane.store.schema import rate_buckets
from spendgate.contract import MAX_RATE_LIMIT, MINUTE_MS, RateLimits

FULL = 2**62  # the level of a dimension without a limit
SLICE_SHARE = 4  # a grant's slice is at most 1/SLICE_SHARE of what is left
PARALLEL_RETRY_MS = 1_000  # a slot frees when any request of the key ends: no honest bound exists


Limits = RateLimits
NO_LIMITS = Limits()


@dataclass(frozen=True)
class Ask:
    """What a request (1, its estimate, 1) or a grant's slice takes."""

    requests: int = 0
    tokens: int = 0
    slots: int = 0


NOTHING = Ask()
MAX_LIMIT = MAX_RATE_LIMIT


def check(limits: Limits, removing: bool = False) -> Limits:
    """Each limit set must be a positive integer (or 0 to remove one, on an update)."""
    for name, value in (
        ("rpm_limit", limits.rpm),
        ("tpm_limit", limits.tpm),
        ("max_parallel_requests", limits.parallel),
    ):
        if value is not None and not (0 if removing else 1) <= value <= MAX_LIMIT:
            least = "0 (no limit)" if removing else "1"
            raise InvalidArgument(f"rate_limits.{name}", f"must be between {least} and {MAX_LIMIT}")
    return limits


def updated(current: Limits, change: Limits) -> Limits:
    """`change` applied: a field set to 0 removes that limit, one unset keeps it."""

    def one(old: int | None, new: int | None) -> int | None:
        return old if new is None else (new or None)

    return Limits(
        one(current.rpm, change.rpm), one(current.tpm, change.tpm), one(current.parallel, change.parallel)
    )


class Dimension(enum.StrEnum):
    REQUESTS = "requests"
    TOKENS = "tokens"
    PARALLEL = "parallel"


@dataclass(frozen=True)
class Bucket:
    requests: int  # scaled by MINUTE_MS
    tokens: int  # scaled by MINUTE_MS; may be negative (debt)
    updated_ms: int
    in_flight: int  # slots held by the key's active reservations

    @classmethod
    def full(cls, now_ms: int) -> Bucket:
        return cls(FULL, FULL, now_ms, 0)


@dataclass(frozen=True)
class Status:
    """What the response headers say, and for a refusal, why and for how long."""

    limits: Limits
    requests_remaining: int = 0
    requests_reset_ms: int = 0  # until the bucket is full again
    tokens_remaining: int = 0
    tokens_reset_ms: int = 0
    in_flight: int = 0
    refused: Dimension | None = None
    retry_after_ms: int = 0


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _level(value: int, limit: int | None, elapsed: int) -> int:
    if limit is None:
        return FULL
    return min(limit * MINUTE_MS, value + elapsed * limit)


def refill(bucket: Bucket, limits: Limits, now_ms: int) -> Bucket:
    elapsed = max(0, now_ms - bucket.updated_ms)
    return Bucket(
        _level(bucket.requests, limits.rpm, elapsed),
        _level(bucket.tokens, limits.tpm, elapsed),
        max(now_ms, bucket.updated_ms),
        bucket.in_flight,
    )


def refusal(bucket: Bucket, limits: Limits, ask: Ask, alone: bool = True) -> tuple[Dimension, int] | None:
    """Why `ask` does not fit the (refilled) bucket and how long until it would, or None.
    `alone`: a request larger than the whole minute fits a full bucket (not a slice)."""
    waits: list[tuple[int, Dimension]] = []
    if limits.rpm is not None and ask.requests:
        need = ask.requests * MINUTE_MS
        if need > bucket.requests:
            waits.append((_ceil_div(need - bucket.requests, limits.rpm), Dimension.REQUESTS))
    if limits.tpm is not None and ask.tokens:
        need, capacity = ask.tokens * MINUTE_MS, limits.tpm * MINUTE_MS
        if need > bucket.tokens and not (alone and bucket.tokens >= capacity):
            waits.append((_ceil_div(min(need, capacity) - bucket.tokens, limits.tpm), Dimension.TOKENS))
    if limits.parallel is not None and ask.slots and bucket.in_flight + ask.slots > limits.parallel:
        waits.append((PARALLEL_RETRY_MS, Dimension.PARALLEL))
    if not waits:
        return None
    wait, dimension = max(waits)
    return dimension, wait


def take(bucket: Bucket, ask: Ask) -> Bucket:
    return replace(
        bucket,
        requests=bucket.requests - ask.requests * MINUTE_MS,
        tokens=max(-FULL, bucket.tokens - ask.tokens * MINUTE_MS),  # a debt still fits BIGINT
        in_flight=bucket.in_flight + ask.slots,
    )


def give(bucket: Bucket, limits: Limits, requests: int = 0, tokens: int = 0, slots: int = 0) -> Bucket:
    """Back into the bucket, never above a minute's allowance (tokens may be negative: debt)."""

    def back(value: int, amount: int, limit: int | None) -> int:
        return FULL if limit is None else max(-FULL, min(limit * MINUTE_MS, value + amount * MINUTE_MS))

    return replace(
        bucket,
        requests=back(bucket.requests, requests, limits.rpm),
        tokens=back(bucket.tokens, tokens, limits.tpm),
        in_flight=max(0, bucket.in_flight - slots),
    )


def slice_of(bucket: Bucket, limits: Limits, want: Ask, least: Ask) -> Ask | None:
    """A grant's share of what is left: at most 1/SLICE_SHARE of it in each limited
    dimension, at most `want`, and nothing if less than `least` (0 where unlimited)."""

    def share(left: int, wanted: int, minimum: int) -> int | None:
        amount = min(wanted, max(left, 0) // SLICE_SHARE)
        return amount if amount >= max(minimum, 1) else None  # a slice of nothing admits nothing

    parts = (
        share(bucket.requests // MINUTE_MS, want.requests, least.requests) if limits.rpm is not None else 0,
        share(bucket.tokens // MINUTE_MS, want.tokens, least.tokens) if limits.tpm is not None else 0,
        share(limits.parallel - bucket.in_flight, want.slots, least.slots)
        if limits.parallel is not None
        else 0,
    )
    if any(p is None for p in parts):
        return None
    requests, tokens, slots = (p or 0 for p in parts)
    return Ask(requests, tokens, slots)


def status(bucket: Bucket, limits: Limits, refused: tuple[Dimension, int] | None = None) -> Status:
    def remaining(level: int, limit: int | None) -> int:
        return 0 if limit is None else max(0, min(level, limit * MINUTE_MS)) // MINUTE_MS

    def reset(level: int, limit: int | None) -> int:
        return 0 if limit is None else _ceil_div(max(0, limit * MINUTE_MS - level), limit)

    return Status(
        limits=limits,
        requests_remaining=remaining(bucket.requests, limits.rpm),
        requests_reset_ms=reset(bucket.requests, limits.rpm),
        tokens_remaining=remaining(bucket.tokens, limits.tpm),
        tokens_reset_ms=reset(bucket.tokens, limits.tpm),
        in_flight=bucket.in_flight,
        refused=refused[0] if refused else None,
        retry_after_ms=refused[1] if refused else 0,
    )


# storage: called on a key row the caller has locked -------------------------------


def load(conn: Connection, key_id: str, limits: Limits, now_ms: int) -> Bucket:
    """The key's bucket, refilled to now (full if it has none yet)."""
    row = conn.execute(select(rate_buckets).where(rate_buckets.c.key_id == key_id)).first()
    found = Bucket.full(now_ms) if row is None else Bucket(*row[1:])
    return refill(found, limits, now_ms)  # (which also brings a level down to a lowered limit)


def save(conn: Connection, key_id: str, bucket: Bucket) -> None:
    values = {
        "requests_level": bucket.requests,
        "tokens_level": bucket.tokens,
        "updated_ms": bucket.updated_ms,
        "in_flight": bucket.in_flight,
    }
    done = conn.execute(rate_buckets.update().where(rate_buckets.c.key_id == key_id).values(**values))
    if done.rowcount == 0:
        conn.execute(rate_buckets.insert().values(key_id=key_id, **values))

"""Frozen records passed between the store, the ledger and the servicers.
Protobuf stops at the servicers; everything inside speaks these."""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar

from controlplane.money import Units
from controlplane.periods import CapPeriod, bounds
from controlplane.ratelimits import NO_LIMITS, Limits

Clock = Callable[[], int]  # returns epoch milliseconds


def system_clock() -> int:
    return time.time_ns() // 1_000_000


class Scope(enum.StrEnum):
    STANDARD = "standard"
    MASTER = "master"


class EventStatus(enum.StrEnum):
    OK = "ok"
    UPSTREAM_ERROR = "upstream_error"
    CLIENT_DISCONNECTED = "client_disconnected"
    UPSTREAM_ABORTED = "upstream_aborted"


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    created_ms: int
    credit_micros: int
    spent_micros: int
    reserved_micros: int

    @property
    def remaining_micros(self) -> int:
        return self.credit_micros - self.spent_micros - self.reserved_micros

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Account:
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Key:
    id: str
    account_id: str
    name: str
    scope: Scope
    secret_sha256: bytes
    secret_prefix: str
    cap_micros: int | None
    cap_period: CapPeriod
    strict: bool
    allowed_models: tuple[str, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = NO_LIMITS  # rate limits (ratelimits.py)
    created_ms: int = 0
    revoked_ms: int | None = None
    spent_micros: int = 0
    reserved_micros: int = 0
    period_start_ms: int = 0
    expires_ms: int | None = None  # refused from then on
    # The secret the last rotation replaced, and when it stops authenticating the key.
    old_secret_sha256: bytes | None = None
    old_secret_expires_ms: int | None = None
    rotated_ms: int | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_ms is not None

    def expired(self, now_ms: int) -> bool:
        return self.expires_ms is not None and now_ms >= self.expires_ms

    def previous_secret_expires_ms(self, now_ms: int) -> int | None:
        """When the replaced secret stops working, while it still does."""
        ends = self.old_secret_expires_ms
        return ends if self.old_secret_sha256 is not None and ends is not None and ends > now_ms else None

    @property
    def remaining_micros(self) -> int | None:
        if self.cap_micros is None:
            return None
        return max(0, self.cap_micros - self.spent_micros - self.reserved_micros)

    def period_reset_ms(self, now_ms: int) -> int:
        return bounds(self.cap_period, now_ms)[1]

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Key:
        return cls(
            id=row["id"],
            account_id=row["account_id"],
            name=row["name"],
            scope=Scope(row["scope"]),
            secret_sha256=bytes(row["secret_sha256"]),
            secret_prefix=row["secret_prefix"],
            cap_micros=row["cap_micros"],
            cap_period=CapPeriod(row["cap_period"]),
            strict=bool(row["strict"]),
            allowed_models=tuple(json.loads(row["allowed_models"])),
            metadata=json.loads(row["metadata"]),
            limits=Limits(row["rpm_limit"], row["tpm_limit"], row["max_parallel_requests"]),
            created_ms=row["created_ms"],
            revoked_ms=row["revoked_ms"],
            spent_micros=row["spent_micros"],
            reserved_micros=row["reserved_micros"],
            period_start_ms=row["period_start_ms"],
            expires_ms=row["expires_ms"],
            old_secret_sha256=None if row["old_secret_sha256"] is None else bytes(row["old_secret_sha256"]),
            old_secret_expires_ms=row["old_secret_expires_ms"],
            rotated_ms=row["rotated_ms"],
        )


@dataclass(frozen=True)
class UsageEvent:
    request_id: str
    key_id: str
    ts_ms: int
    provider: str
    model: str
    units: Units
    cost_micros: int
    fee_micros: int
    latency_ms: int
    ttfb_ms: int
    status: EventStatus
    http_status: int
    estimated: bool
    service_tier: str = ""  # what the provider said the request ran on
    price_rules: str = ""  # the price row's rules that priced it (money.Rule.label)

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> UsageEvent:
        return cls(
            request_id=row["request_id"],
            key_id=row["key_id"],
            ts_ms=row["ts_ms"],
            provider=row["provider"],
            model=row["model"],
            units=Units(**{f.name: row[f.name] for f in fields(Units)}),
            cost_micros=row["cost_micros"],
            fee_micros=row["fee_micros"],
            latency_ms=row["latency_ms"],
            ttfb_ms=row["ttfb_ms"],
            status=EventStatus(row["status"]),
            http_status=row["http_status"],
            estimated=bool(row["estimated"]),
            service_tier=row["service_tier"],
            price_rules=row["price_rules"],
        )


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_token: str

"""Domain records ↔ protobuf messages."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from controlplane import ratelimits
from controlplane.errors import InvalidArgument
from controlplane.ledger import Refusal, SettleRefusal
from controlplane.money import OPTIONAL_RATES, Price, Rule, Units
from controlplane.periods import CapPeriod
from controlplane.ratelimits import Ask, Dimension
from controlplane.records import Account, EventStatus, Key, Scope, UsageEvent
from spendgate.contract import ProtoEnum, enum_names, rule_from_pb
from spendgate.v1 import admin_pb2, keys_pb2, usage_pb2

E = TypeVar("E", bound=enum.Enum)


def _by_name(domain: type[E], wire: ProtoEnum) -> dict[E, Any]:
    """A domain enum ↔ its proto enum, matched by name ("standard" ↔ KEY_SCOPE_STANDARD);
    a value missing on either side fails at import, not at the first request."""
    table = {domain(name): value for value, name in enum_names(wire).items()}
    assert set(table) == set(domain), f"{domain.__name__} and its proto enum differ"
    return table


SCOPES = _by_name(Scope, keys_pb2.KeyScope)
PERIODS = _by_name(CapPeriod, keys_pb2.CapPeriod)
STATUSES = _by_name(EventStatus, usage_pb2.EventStatus)
REFUSALS = _by_name(Refusal, usage_pb2.RefusalReason)
SETTLE_REFUSALS = _by_name(SettleRefusal, usage_pb2.SettleRefusal)
T = TypeVar("T")


def _reverse(table: Mapping[T, int], value: int, field: str, default: T | None = None) -> T:
    for domain, wire in table.items():
        if wire == value:
            return domain
    if value == 0 and default is not None:
        return default
    raise InvalidArgument(field, f"unknown value {value}")


def scope_from(value: int) -> Scope:
    return _reverse(SCOPES, value, "scope", Scope.STANDARD)


def period_from(value: int, default: CapPeriod | None = CapPeriod.LIFETIME) -> CapPeriod:
    return _reverse(PERIODS, value, "cap_period", default)


def status_from(value: int) -> EventStatus:
    return _reverse(STATUSES, value, "status", EventStatus.OK)


DIMENSIONS = _by_name(Dimension, usage_pb2.RateLimitDimension)


def rate_to_pb(status: ratelimits.Status) -> usage_pb2.RateLimitStatus:
    return usage_pb2.RateLimitStatus(
        limits=status.limits.to_pb(),
        requests_remaining=status.requests_remaining,
        requests_reset_ms=status.requests_reset_ms,
        tokens_remaining=status.tokens_remaining,
        tokens_reset_ms=status.tokens_reset_ms,
        in_flight=status.in_flight,
        refused=DIMENSIONS[status.refused] if status.refused else None,
        retry_after_ms=status.retry_after_ms,
    )


def ask_from(msg: usage_pb2.RateSlice) -> Ask:
    if msg.requests < 0 or msg.slots < 0:
        raise InvalidArgument("slice", "requests and slots must not be negative")
    return Ask(msg.requests, msg.tokens, msg.slots)


def slice_to_pb(ask: Ask) -> usage_pb2.RateSlice:
    return usage_pb2.RateSlice(requests=ask.requests, tokens=ask.tokens, slots=ask.slots)


def key_to_pb(key: Key, now_ms: int) -> keys_pb2.Key:
    msg = keys_pb2.Key(
        id=key.id,
        account_id=key.account_id,
        name=key.name,
        scope=SCOPES[key.scope],
        cap_period=PERIODS[key.cap_period],
        strict=key.strict,
        allowed_models=list(key.allowed_models),
        metadata=dict(key.metadata),
        revoked=key.revoked,
        created_ms=key.created_ms,
        revoked_ms=key.revoked_ms or 0,
        spent_micros=key.spent_micros,
        reserved_micros=key.reserved_micros,
        period_start_ms=key.period_start_ms,
        period_reset_ms=key.period_reset_ms(now_ms),
        secret_prefix=key.secret_prefix,
    )
    if key.limits.any:
        msg.rate_limits.CopyFrom(key.limits.to_pb())
    if key.cap_micros is not None:
        msg.cap_micros = key.cap_micros
    if key.remaining_micros is not None:
        msg.remaining_micros = key.remaining_micros
    if key.expires_ms is not None:
        msg.expires_ms = key.expires_ms
        msg.expired = key.expired(now_ms)
    msg.rotated_ms = key.rotated_ms or 0
    msg.previous_secret_expires_ms = key.previous_secret_expires_ms(now_ms) or 0
    return msg


def account_to_pb(account: Account) -> admin_pb2.Account:
    return admin_pb2.Account(
        id=account.id,
        name=account.name,
        created_ms=account.created_ms,
        credit_micros=account.credit_micros,
        spent_micros=account.spent_micros,
        reserved_micros=account.reserved_micros,
        remaining_micros=account.remaining_micros,
    )


def units_from(msg: usage_pb2.Units) -> Units:
    try:
        return Units(**{f.name: getattr(msg, f.name) for f in fields(Units)})
    except ValueError as exc:
        raise InvalidArgument("units", str(exc)) from None


def units_to_pb(units: Units) -> usage_pb2.Units:
    return usage_pb2.Units(**vars(units))


def event_to_pb(event: UsageEvent) -> usage_pb2.UsageEvent:
    return usage_pb2.UsageEvent(
        request_id=event.request_id,
        key_id=event.key_id,
        ts_ms=event.ts_ms,
        provider=event.provider,
        model=event.model,
        units=units_to_pb(event.units),
        cost_micros=event.cost_micros,
        fee_micros=event.fee_micros,
        latency_ms=event.latency_ms,
        ttfb_ms=event.ttfb_ms,
        status=STATUSES[event.status],
        http_status=event.http_status,
        estimated=event.estimated,
        service_tier=event.service_tier,
        price_rules=event.price_rules,
    )


# Optional rates: unset in protobuf means "not priced separately" (None), not 0.


def price_to_pb(price: Price) -> usage_pb2.Price:
    msg = usage_pb2.Price(
        provider=price.provider,
        model=price.model,
        effective_from_ms=price.effective_from_ms,
        input_micros_per_mtok=price.input_micros_per_mtok,
        output_micros_per_mtok=price.output_micros_per_mtok,
        max_output_tokens=price.max_output_tokens,
        source=price.source,
        origin=price.origin,
    )
    for name in OPTIONAL_RATES:
        if getattr(price, name) is not None:
            setattr(msg, name, getattr(price, name))
    msg.rules.extend(rule_to_pb(rule) for rule in price.rules)
    return msg


def rule_to_pb(rule: Rule) -> usage_pb2.PriceRule:
    msg = usage_pb2.PriceRule(service_tier=rule.service_tier, rates=usage_pb2.PriceRates(**rule.rates))
    if rule.above_input_tokens is not None:
        msg.above_input_tokens = rule.above_input_tokens
    if rule.window is not None:
        msg.window_start_minute, msg.window_end_minute = rule.window
    return msg


def rule_from(msg: usage_pb2.PriceRule, field: str) -> Rule:
    try:
        return rule_from_pb(msg)
    except ValueError as exc:
        raise InvalidArgument(field, str(exc)) from None


def price_from(msg: usage_pb2.Price, field: str = "price") -> Price:
    return Price(
        provider=msg.provider,
        model=msg.model,
        input_micros_per_mtok=msg.input_micros_per_mtok,
        output_micros_per_mtok=msg.output_micros_per_mtok,
        max_output_tokens=msg.max_output_tokens,
        effective_from_ms=msg.effective_from_ms,
        source=msg.source or "admin api",
        rules=tuple(rule_from(rule, f"{field}.rules[{i}]") for i, rule in enumerate(msg.rules)),
        **_optional_rates(msg),
    )


def _optional_rates(msg: usage_pb2.Price) -> dict[str, Any]:
    return {name: getattr(msg, name) if msg.HasField(name) else None for name in OPTIONAL_RATES}

"""JSON shapes of keys, usage and events, shared by the CLI's --json output
and the data plane's REST facade. Money stays integer micros; `*_usd` fields
are exact decimal strings, never floats."""

from __future__ import annotations

from typing import Any

from spendgate.contract import OPTIONAL_RATES, enum_names, format_usd
from spendgate.contract import RATES as RATE_NAMES
from spendgate.times import iso_utc
from spendgate.v1 import keys_pb2, usage_pb2, webhooks_pb2

SCOPE_NAMES = enum_names(keys_pb2.KeyScope)
PERIOD_NAMES = enum_names(keys_pb2.CapPeriod)
STATUS_NAMES = enum_names(usage_pb2.EventStatus)
DELIVERY_STATUS_NAMES = enum_names(webhooks_pb2.WebhookDeliveryStatus)


def key_json(key: keys_pb2.Key) -> dict[str, Any]:
    cap = key.cap_micros if key.HasField("cap_micros") else None
    return {
        "id": key.id,
        "name": key.name,
        "scope": SCOPE_NAMES.get(key.scope, "standard"),
        "max_spend_usd": None if cap is None else format_usd(cap),
        "max_spend_micros": cap,
        "cap_period": PERIOD_NAMES.get(key.cap_period, "lifetime"),
        "strict": key.strict,
        "allowed_models": list(key.allowed_models),
        "metadata": dict(key.metadata),
        "spent_micros": key.spent_micros,
        "reserved_micros": key.reserved_micros,
        "remaining_micros": key.remaining_micros if key.HasField("remaining_micros") else None,
        # How far past its cap the key went: the last admitted request may cost more than its
        # estimate (a provider ignoring max_tokens); it is billed in full, and nothing more is admitted.
        "over_cap_micros": 0 if cap is None else max(0, key.spent_micros - cap),
        "period_reset_ms": key.period_reset_ms or None,
        "revoked": key.revoked,
        "created_ms": key.created_ms,
        "revoked_ms": key.revoked_ms or None,
        "secret_prefix": key.secret_prefix,
        **expiry_json(key),
        **rate_limits_json(key),
        "rotated_ms": key.rotated_ms or None,
        # While the secret the last rotation replaced still works: when it stops.
        "previous_secret_expires_ms": key.previous_secret_expires_ms or None,
    }


def rate_limits_json(key: keys_pb2.Key) -> dict[str, Any]:
    """The key's rate limits under LiteLLM's names; null: no limit."""
    limits = key.rate_limits
    return {
        "rpm_limit": limits.rpm_limit if limits.HasField("rpm_limit") else None,
        "tpm_limit": limits.tpm_limit if limits.HasField("tpm_limit") else None,
        "max_parallel_requests": (
            limits.max_parallel_requests if limits.HasField("max_parallel_requests") else None
        ),
    }


def expiry_json(key: keys_pb2.Key) -> dict[str, Any]:
    """`expires_at` as OpenRouter gives it (ISO-8601 UTC, null: never), the same in ms, and
    whether it has passed."""
    expires = key.expires_ms if key.HasField("expires_ms") else None
    return {
        "expires_at": None if expires is None else iso_utc(expires),
        "expires_at_ms": expires,
        "expired": key.expired,
    }


def _totals(row: usage_pb2.KeyUsage | usage_pb2.ModelUsage | usage_pb2.GroupUsage) -> dict[str, int]:
    return {
        "requests": row.requests,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cached_input_tokens": row.cached_input_tokens,
        "cache_write_tokens": row.cache_write_tokens,
        "cost_micros": row.cost_micros,
        "fee_micros": row.fee_micros,
        "characters": row.characters,
        "audio_ms": row.audio_ms,
        "images": row.images,
    }


def usage_json(usage: usage_pb2.GetUsageResponse) -> dict[str, Any]:
    grouped: dict[str, Any] = {}
    if usage.group_by:
        grouped = {
            "group_by": usage.group_by,
            "groups": [
                {
                    "value": g.value if g.HasField("value") else None,
                    "key_ids": list(g.key_ids),
                    **_totals(g),
                }
                for g in usage.groups
            ],
        }
    return {
        **grouped,
        "by_key": [
            {
                "key_id": k.key_id,
                "name": k.name,
                "metadata": dict(k.metadata),
                **_totals(k),
                "by_model": [
                    {
                        "model": m.model,
                        "provider": m.provider,
                        **_totals(m),
                        "avg_latency_ms": m.avg_latency_ms,
                    }
                    for m in k.by_model
                ],
            }
            for k in usage.by_key
        ],
    }


def event_json(event: usage_pb2.UsageEvent) -> dict[str, Any]:
    u = event.units
    return {
        "request_id": event.request_id,
        "ts_ms": event.ts_ms,
        "provider": event.provider,
        "model": event.model,
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cached_input_tokens": u.cached_input_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "audio_input_tokens": u.audio_input_tokens,
        "audio_output_tokens": u.audio_output_tokens,
        "characters": u.characters,
        "audio_ms": u.audio_ms,
        "images": u.images,
        "cache_write_1h_tokens": u.cache_write_1h_tokens,
        "image_input_tokens": u.image_input_tokens,
        "web_searches": u.web_searches,
        "file_searches": u.file_searches,
        "service_tier": event.service_tier,
        "price_rules": event.price_rules,
        "cost_micros": event.cost_micros,
        "fee_micros": event.fee_micros,
        "latency_ms": event.latency_ms,
        "ttfb_ms": event.ttfb_ms,
        "status": STATUS_NAMES.get(event.status, "ok"),
        "http_status": event.http_status,
        "estimated": event.estimated,
    }


def price_json(price: usage_pb2.Price) -> dict[str, Any]:
    return {
        "provider": price.provider,
        "model": price.model,
        "effective_from_ms": price.effective_from_ms,
        "input_micros_per_mtok": price.input_micros_per_mtok,
        "output_micros_per_mtok": price.output_micros_per_mtok,
        **{name: getattr(price, name) if price.HasField(name) else None for name in OPTIONAL_RATES},
        "max_output_tokens": price.max_output_tokens,
        "source": price.source,
        "rules": [rule_json(rule) for rule in price.rules],
    }


def rule_json(rule: usage_pb2.PriceRule) -> dict[str, Any]:
    window = None
    if rule.HasField("window_start_minute"):
        start, end = rule.window_start_minute, rule.window_end_minute
        window = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    return {
        "above_input_tokens": rule.above_input_tokens if rule.HasField("above_input_tokens") else None,
        "window": window,
        "service_tier": rule.service_tier or None,
        "rates": {name: getattr(rule.rates, name) for name in RATE_NAMES if rule.rates.HasField(name)},
    }


def webhook_endpoint_json(endpoint: webhooks_pb2.WebhookEndpoint) -> dict[str, Any]:
    low = endpoint.wallet_low_micros if endpoint.HasField("wallet_low_micros") else None
    return {
        "url": endpoint.url,
        "event_types": list(endpoint.event_types),
        "secret_prefix": endpoint.secret_prefix,
        "wallet_low_micros": low,
        "wallet_low_usd": None if low is None else format_usd(low),
        "created_ms": endpoint.created_ms,
        "updated_ms": endpoint.updated_ms,
    }


def delivery_json(d: webhooks_pb2.WebhookDelivery) -> dict[str, Any]:
    return {
        "event_id": d.event_id,
        "event_type": d.event_type,
        "status": DELIVERY_STATUS_NAMES.get(d.status, "pending"),
        "attempts": d.attempts,
        "next_attempt_ms": d.next_attempt_ms or None,
        "last_error": d.last_error or None,
        "last_status_code": d.last_status_code or None,
        "created_ms": d.created_ms,
        "delivered_ms": d.delivered_ms or None,
        "body": d.body,
    }

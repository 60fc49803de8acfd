"""The brief's REST API for keys and usage, translated to the control plane's
gRPC. The caller's master key is passed through as the gRPC credential, so
the control plane alone decides who may do what (a standard key gets 403,
another account's key id 404). The webhook routes (endpoint, thresholds,
deliveries) are answered the same way."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dataplane.auth import plausible_secret, presented_key
from dataplane.errors import (
    BadRequest,
    ControlPlaneUnavailable,
    MasterKeyRequired,
    NotFound,
    Unauthorized,
)
from dataplane.inbound import parse_json, read_raw
from spendgate import shapes
from spendgate.contract import MAX_RATE_LIMIT, enum_values, format_usd, parse_usd
from spendgate.times import parse_iso_ms
from spendgate.v1 import keys_pb2, keys_pb2_grpc, usage_pb2, usage_pb2_grpc, webhooks_pb2, webhooks_pb2_grpc

STATUS = {
    grpc.StatusCode.UNAUTHENTICATED: Unauthorized,
    grpc.StatusCode.PERMISSION_DENIED: MasterKeyRequired,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: BadRequest,
}


# The control plane names its own fields; where REST spells one differently, `param` says the REST name.
REST_FIELDS = {"expires_ms": "expires_at"}
MAX_BODY_BYTES = 64 * 1024  # a key's name, cap, models and metadata: far less than this
SCOPES = enum_values(keys_pb2.KeyScope)
PERIODS = enum_values(keys_pb2.CapPeriod)
DELIVERY_STATUSES = enum_values(webhooks_pb2.WebhookDeliveryStatus)
# The protobuf fields the REST values travel in: a value outside its field's range is the
# caller's mistake (400 naming the field), not an exception in the facade.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_USD_EXPONENT = len(str(INT64_MAX // 1_000_000)) - 1  # INT64_MAX micros is 9.2e12 USD


class KeysApi:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._keys = keys_pb2_grpc.KeyServiceStub(channel)
        self._usage = usage_pb2_grpc.UsageServiceStub(channel)
        self._webhooks = webhooks_pb2_grpc.WebhookServiceStub(channel)

    async def _call(
        self, request: Request, method: Any, message: Any, names: dict[str, str] = REST_FIELDS
    ) -> Any:
        """`names`: the REST spelling of a control-plane field, for a 400's `param` and message."""
        secret = presented_key(request)
        if secret is None:
            raise Unauthorized("Send your master key as `Authorization: Bearer <key>`.")
        if not plausible_secret(secret):  # could not even travel as gRPC metadata
            raise Unauthorized("invalid credentials")
        try:
            return await method(message, metadata=(("authorization", f"Bearer {secret}"),), timeout=10)
        except grpc.aio.AioRpcError as exc:
            error = STATUS.get(exc.code())
            if error is None:
                raise ControlPlaneUnavailable(
                    "The gateway cannot reach its control plane; try again."
                ) from exc
            field = (exc.details() or "").split(":", 1)[0] if error is BadRequest else None
            details = exc.details() or exc.code().name
            if field is not None and field in names:
                details = names[field] + details[len(field) :]
                field = names[field]
            raise error(details, param=field) from exc

    @staticmethod
    async def _json(request: Request) -> dict[str, Any]:
        # Decimals stay exact (`max_spend_usd: 0.1`); depth and parser errors are 400s.
        return parse_json(await read_raw(request, MAX_BODY_BYTES), parse_float=Decimal)

    async def create(self, request: Request) -> Response:
        body = await self._json(request)
        message = keys_pb2.CreateKeyRequest(name=_str(body, "name", required=True))
        message.scope = _choice(body, "scope", SCOPES, "standard")
        message.cap_period = _choice(body, "cap_period", PERIODS, "lifetime")
        if body.get("max_spend_usd") is not None:
            message.cap_micros = _usd(body["max_spend_usd"], "max_spend_usd")
        message.strict = _bool(body, "strict")
        message.allowed_models.extend(_models(body))
        message.metadata.update(_metadata(body))
        _, expires = _expiry(body)
        if expires is not None:
            message.expires_ms = expires
        message.rate_limits.CopyFrom(_rate_limits(body, removing=False))
        created = await self._call(request, self._keys.CreateKey, message, _expiry_names(body))
        return JSONResponse({**shapes.key_json(created.key), "secret": created.secret}, status_code=201)

    async def list(self, request: Request) -> Response:
        params = request.query_params
        message = keys_pb2.ListKeysRequest(
            page_size=_int(params.get("limit", "0"), "limit", INT32_MAX),
            page_token=params.get("page_token", ""),
            include_revoked=params.get("include_revoked", "false").lower() == "true",
        )
        page = await self._call(request, self._keys.ListKeys, message)
        return JSONResponse(
            {"data": [shapes.key_json(k) for k in page.keys], "next_page_token": page.next_page_token or None}
        )

    async def get(self, request: Request) -> Response:
        message = keys_pb2.GetKeyRequest(key_id=request.path_params["key_id"])
        return JSONResponse(shapes.key_json((await self._call(request, self._keys.GetKey, message)).key))

    async def update(self, request: Request) -> Response:
        body = await self._json(request)
        message = keys_pb2.UpdateKeyRequest(key_id=request.path_params["key_id"])
        if "name" in body:
            message.name = _str(body, "name", required=True)
        if "max_spend_usd" in body:
            if body["max_spend_usd"] is None:
                message.remove_cap = True
            else:
                message.cap_micros = _usd(body["max_spend_usd"], "max_spend_usd")
        if "cap_period" in body:
            message.cap_period = _choice(body, "cap_period", PERIODS, "lifetime")
        if "strict" in body:
            message.strict = _bool(body, "strict")
        if "allowed_models" in body:
            message.allowed_models.CopyFrom(keys_pb2.ModelList(models=_models(body)))
        if "metadata" in body:  # replaces the whole map; null or {} clears it
            message.metadata.CopyFrom(keys_pb2.Metadata(entries=_metadata(body)))
        named, expires = _expiry(body)
        if expires is not None:
            message.expires_ms = expires
        elif named:  # null: the key no longer expires
            message.remove_expiry = True
        message.rate_limits.CopyFrom(_rate_limits(body, removing=True))
        updated = await self._call(request, self._keys.UpdateKey, message, _expiry_names(body))
        return JSONResponse(shapes.key_json(updated.key))

    async def rotate(self, request: Request) -> Response:
        """POST /v1/keys/{id}/rotate: a new secret (shown once) for the same key; the old one
        keeps working for `grace_ms` (default 24 h, 0: stops at once)."""
        raw = await read_raw(request, MAX_BODY_BYTES)
        body = parse_json(raw, parse_float=Decimal) if raw.strip() else {}
        message = keys_pb2.RotateKeyRequest(key_id=request.path_params["key_id"])
        if body.get("grace_ms") is not None:
            grace = body["grace_ms"]
            if not _is_int(grace) or not 0 <= grace <= INT64_MAX:
                raise BadRequest("grace_ms: must be a whole number of milliseconds", param="grace_ms")
            message.grace_ms = grace
        rotated = await self._call(request, self._keys.RotateKey, message)
        return JSONResponse({**shapes.key_json(rotated.key), "secret": rotated.secret}, status_code=201)

    async def revoke(self, request: Request) -> Response:
        message = keys_pb2.RevokeKeyRequest(key_id=request.path_params["key_id"])
        return JSONResponse(shapes.key_json((await self._call(request, self._keys.RevokeKey, message)).key))

    async def own_key(self, request: Request) -> Response:
        """GET /v1/key: the calling key's limit, usage and what is left, OpenRouter-shaped
        (amounts in USD as exact numbers, and in micro-USD beside them)."""
        reply = await self._call(request, self._usage.GetOwnKey, usage_pb2.GetOwnKeyRequest())
        key = shapes.key_json(reply.key)
        cap, remaining = key["max_spend_micros"], key["remaining_micros"]
        doc: dict[str, Any] = {
            "id": key["id"],
            "label": key["name"],
            "limit": None if cap is None else _USD(cap),
            "limit_micros": cap,
            "limit_remaining": None if remaining is None else _USD(remaining),
            "limit_remaining_micros": remaining,
            "limit_reset": None if key["cap_period"] == "lifetime" else key["cap_period"],
            "usage": _USD(reply.lifetime_cost_micros),
            "usage_micros": reply.lifetime_cost_micros,
            "usage_daily": _USD(reply.day_cost_micros),
            "usage_daily_micros": reply.day_cost_micros,
            "usage_weekly": _USD(reply.week_cost_micros),
            "usage_weekly_micros": reply.week_cost_micros,
            "usage_monthly": _USD(reply.month_cost_micros),
            "usage_monthly_micros": reply.month_cost_micros,
            "period_usage_micros": key["spent_micros"],  # what the cap counts, this period
            "reserved_micros": key["reserved_micros"],
            "period_reset_ms": key["period_reset_ms"],
            **shapes.expiry_json(reply.key),
            "is_free_tier": False,
        }
        return _usd_numbers(doc)

    async def usage(self, request: Request) -> Response:
        params = request.query_params
        message = usage_pb2.GetUsageRequest(
            from_ms=_int(params.get("from_ms", ""), "from_ms", INT64_MAX),
            to_ms=_int(params.get("to_ms", ""), "to_ms", INT64_MAX),
            group_by=params.get("group_by", ""),  # metadata.<key>: checked by the control plane
        )
        return JSONResponse(shapes.usage_json(await self._call(request, self._usage.GetUsage, message)))

    async def key_usage(self, request: Request) -> Response:
        params = request.query_params
        message = usage_pb2.ListUsageEventsRequest(
            key_id=request.path_params["key_id"],
            page_size=_int(params.get("limit", "0"), "limit", INT32_MAX),
            page_token=params.get("page_token", ""),
        )
        page = await self._call(request, self._usage.ListUsageEvents, message)
        key = shapes.key_json(page.key)
        cap = key["max_spend_micros"]
        used = key["spent_micros"] + key["reserved_micros"]
        return JSONResponse(
            {
                "key_id": key["id"],
                "name": key["name"],
                "max_spend_micros": cap,
                "spent_micros": key["spent_micros"],
                "reserved_micros": key["reserved_micros"],
                "remaining_micros": key["remaining_micros"],
                "cap_used_bps": None if not cap else min(10_000, used * 10_000 // cap),
                "over_cap_micros": key["over_cap_micros"],
                "period": key["cap_period"],
                "period_reset_ms": key["period_reset_ms"],
                "events": [shapes.event_json(e) for e in page.events],
                "next_page_token": page.next_page_token or None,
            }
        )

    # webhooks -------------------------------------------------------------

    async def set_webhook(self, request: Request) -> Response:
        body = await self._json(request)
        message = webhooks_pb2.SetWebhookEndpointRequest(
            url=_str(body, "url", required=True),
            event_types=_strings(body, "event_types"),
            rotate_secret=_bool(body, "rotate_secret"),
        )
        done = await self._call(request, self._webhooks.SetWebhookEndpoint, message)
        return JSONResponse({**shapes.webhook_endpoint_json(done.endpoint), "secret": done.secret or None})

    async def get_webhook(self, request: Request) -> Response:
        message = webhooks_pb2.GetWebhookEndpointRequest()
        got = await self._call(request, self._webhooks.GetWebhookEndpoint, message)
        return JSONResponse(shapes.webhook_endpoint_json(got.endpoint))

    async def delete_webhook(self, request: Request) -> Response:
        message = webhooks_pb2.DeleteWebhookEndpointRequest()
        done = await self._call(request, self._webhooks.DeleteWebhookEndpoint, message)
        return JSONResponse({"deleted": True, "dropped_deliveries": done.dropped_deliveries})

    async def set_thresholds(self, request: Request) -> Response:
        body = await self._json(request)
        percents = body.get("percents")
        if not isinstance(percents, list) or not all(_is_int(p) for p in percents):
            raise BadRequest("percents: must be a list of whole percents", param="percents")
        if any(not -INT32_MAX <= p <= INT32_MAX for p in percents):
            raise BadRequest("percents: every threshold must be from 1 to 100", param="percents")
        message = webhooks_pb2.SetKeyThresholdsRequest(
            key_id=request.path_params["key_id"], percents=percents
        )
        done = await self._call(request, self._webhooks.SetKeyThresholds, message)
        return JSONResponse({"key_id": done.key_id, "percents": list(done.percents)})

    async def get_thresholds(self, request: Request) -> Response:
        message = webhooks_pb2.GetKeyThresholdsRequest(key_id=request.path_params["key_id"])
        got = await self._call(request, self._webhooks.GetKeyThresholds, message)
        return JSONResponse({"key_id": got.key_id, "percents": list(got.percents)})

    async def set_wallet_threshold(self, request: Request) -> Response:
        body = await self._json(request)
        if "low_usd" not in body:
            raise BadRequest(
                "low_usd: required (a USD amount, or null to turn wallet.low off)", param="low_usd"
            )
        message = webhooks_pb2.SetWalletThresholdRequest()
        if body["low_usd"] is not None:
            message.low_micros = _usd(body["low_usd"], "low_usd")
        done = await self._call(request, self._webhooks.SetWalletThreshold, message)
        low = done.low_micros if done.HasField("low_micros") else None
        return JSONResponse({"low_micros": low, "low_usd": None if low is None else format_usd(low)})

    async def webhook_deliveries(self, request: Request) -> Response:
        params = request.query_params
        status = params.get("status", "")
        if status and status not in DELIVERY_STATUSES:
            raise BadRequest(f"status: must be one of {sorted(DELIVERY_STATUSES)}", param="status")
        message = webhooks_pb2.ListWebhookDeliveriesRequest(
            page_size=_int(params.get("limit", "0"), "limit", INT32_MAX),
            page_token=params.get("page_token", ""),
        )
        if status:
            message.status = DELIVERY_STATUSES[status]
        page = await self._call(request, self._webhooks.ListWebhookDeliveries, message)
        return JSONResponse(
            {
                "data": [shapes.delivery_json(d) for d in page.deliveries],
                "next_page_token": page.next_page_token or None,
            }
        )

    async def retry_webhook_delivery(self, request: Request) -> Response:
        event_id = request.path_params["event_id"]
        message = webhooks_pb2.RetryWebhookDeliveryRequest(event_id=event_id)
        done = await self._call(request, self._webhooks.RetryWebhookDelivery, message)
        return JSONResponse(shapes.delivery_json(done.delivery))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _strings(body: dict[str, Any], field: str) -> list[str]:
    value = body.get(field)
    if value is None:  # absent or null: the default (for event_types, every type)
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):  # false is not []
        raise BadRequest(f"{field}: must be a list of strings", param=field)
    return value


def _str(body: dict[str, Any], field: str, required: bool = False) -> str:
    value = body.get(field)
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadRequest(f"{field}: must be a non-empty string", param=field)
    return value


def _bool(body: dict[str, Any], field: str) -> bool:
    value = body.get(field, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{field}: must be true or false", param=field)
    return value


def _choice(body: dict[str, Any], field: str, table: dict[str, Any], default: str) -> Any:
    value = body.get(field, default)
    if value not in table:
        raise BadRequest(f"{field}: must be one of {sorted(table)}", param=field)
    return table[value]


def _usd(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise BadRequest(f"{field}: must be a number of USD", param=field)
    try:
        amount: Decimal | None = Decimal(str(value).strip())
    except InvalidOperation:
        amount = None  # parse_usd names the problem
    # Decided from the exponent, before any arithmetic: `1e999990` would otherwise expand to a
    # million-digit integer (seconds of CPU) and `1e-999999999` round to zero.
    if amount is not None and amount.is_finite() and amount > 0:
        if amount.adjusted() > MAX_USD_EXPONENT:
            raise BadRequest(f"{field}: must be at most {format_usd(INT64_MAX)} USD", param=field)
        if amount.adjusted() < -6:
            raise BadRequest(f"{field}: USD amount finer than one micro-USD: {value!r}", param=field)
    try:
        micros = parse_usd(value)
    except (ValueError, ArithmeticError) as exc:
        raise BadRequest(f"{field}: {exc}", param=field) from None
    if micros > INT64_MAX:
        raise BadRequest(f"{field}: must be at most {format_usd(INT64_MAX)} USD", param=field)
    return micros


def _models(body: dict[str, Any]) -> list[str]:
    value = body.get("allowed_models")
    if value is None:  # missing, or null: any model
        return []
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise BadRequest("allowed_models: must be a list of model names", param="allowed_models")
    return value


def _expiry(body: dict[str, Any]) -> tuple[bool, int | None]:
    """Whether the body names an expiry, and which: `expires_at` (ISO-8601 with its offset,
    `2027-01-31T23:59:59Z`) or `expires_at_ms` (epoch ms); null for none."""
    if "expires_at" in body and "expires_at_ms" in body:
        raise BadRequest("expires_at: give expires_at or expires_at_ms, not both", param="expires_at")
    if body.get("expires_at_ms") is not None:
        value = body["expires_at_ms"]
        if not _is_int(value) or not 0 < value <= INT64_MAX:
            raise BadRequest("expires_at_ms: must be epoch milliseconds", param="expires_at_ms")
        return True, value
    if body.get("expires_at") is not None:
        if not isinstance(body["expires_at"], str):
            raise BadRequest("expires_at: must be an ISO-8601 date-time string", param="expires_at")
        try:
            return True, parse_iso_ms(body["expires_at"])
        except ValueError as exc:
            raise BadRequest(f"expires_at: {exc}", param="expires_at") from None
    return "expires_at" in body or "expires_at_ms" in body, None


def _expiry_names(body: dict[str, Any]) -> dict[str, str]:
    """The control plane's `expires_ms` is the field the body spelled it as."""
    return {"expires_ms": "expires_at_ms"} if "expires_at_ms" in body else REST_FIELDS


def _metadata(body: dict[str, Any]) -> dict[str, str]:
    value = body.get("metadata")
    if value is None:  # missing, or null (on PATCH: clear it)
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadRequest("metadata: must be an object of strings", param="metadata")
    return value


RATE_LIMIT_FIELDS = ("rpm_limit", "tpm_limit", "max_parallel_requests")  # LiteLLM's names


def _rate_limits(body: dict[str, Any], removing: bool) -> keys_pb2.RateLimits:
    """The limits the body names: a positive integer sets one; on an update, null removes it."""
    limits = keys_pb2.RateLimits()
    for field in RATE_LIMIT_FIELDS:
        if field not in body or (body[field] is None and not removing):
            continue
        value = body[field]
        if value is None:
            setattr(limits, field, 0)  # the control plane's "remove"
            continue
        if not _is_int(value) or not 1 <= value <= MAX_RATE_LIMIT:
            what = " (or null to remove it)" if removing else ""
            raise BadRequest(f"{field}: must be an integer from 1 to {MAX_RATE_LIMIT}{what}", param=field)
        setattr(limits, field, value)
    return limits


def _int(text: str, field: str, most: int) -> int:
    """A non-negative integer query parameter that fits its protobuf field."""
    try:
        value = int(text)
    except ValueError:  # not an integer (or one of over 4,300 digits)
        raise BadRequest(f"{field}: must be an integer", param=field) from None
    if not 0 <= value <= most:
        raise BadRequest(f"{field}: must be an integer from 0 to {most}", param=field)
    return value


def _usd_numbers(doc: dict[str, Any]) -> Response:
    """JSON whose `_USD` values are exact decimal numbers (`4.91555`, never through a float):
    OpenRouter's key endpoint gives amounts as numbers, and money here is never a float.
    (Each is marked with a token no string in the document can know, then unquoted.)"""
    mark = secrets.token_hex(8)
    marked = {k: f"{mark}{format_usd(v.micros)}{mark}" if isinstance(v, _USD) else v for k, v in doc.items()}
    text = json.dumps({"data": marked}).replace(f'"{mark}', "").replace(f'{mark}"', "")
    return Response(text, media_type="application/json")


@dataclass(frozen=True)
class _USD:
    micros: int

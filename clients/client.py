"""A typed Python client for the control plane.

    client = ControlPlaneClient("127.0.0.1:50051", token=master_key_secret)
    key, secret = client.create_key("user_42", cap_micros=5_000_000)

Every call raises `SpendgateRpcError` (carrying the gRPC status code and the
server's message) instead of a bare `grpc.RpcError`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import grpc

from spendgate.contract import enum_values
from spendgate.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)

T = TypeVar("T")

SCOPES = enum_values(keys_pb2.KeyScope)
PERIODS = enum_values(keys_pb2.CapPeriod)


class KeyStream(Iterator[keys_pb2.WatchKeysResponse], Protocol):
    """WatchKeys' stream: iterate it, `cancel()` it to stop."""

    def cancel(self) -> bool: ...


class SpendgateRpcError(Exception):
    """A failed call: `code` is the gRPC status, `details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def _call(
    fn: Callable[..., T], request: Any, metadata: Sequence[tuple[str, str]], timeout: float | None
) -> T:
    try:
        return fn(request, metadata=metadata, timeout=timeout)
    except grpc.RpcError as exc:
        raise SpendgateRpcError(exc.code(), exc.details() or "") from exc


class ControlPlaneClient:
    def __init__(self, target: str, token: str, timeout: float | None = 10.0) -> None:
        self._channel = grpc.insecure_channel(target)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout
        self.keys = keys_pb2_grpc.KeyServiceStub(self._channel)
        self.usage = usage_pb2_grpc.UsageServiceStub(self._channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self.webhooks = webhooks_pb2_grpc.WebhookServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ControlPlaneClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _do(self, fn: Callable[..., T], request: Any) -> T:
        return _call(fn, request, self._metadata, self._timeout)

    # admin ----------------------------------------------------------------

    def create_account(self, name: str, initial_credit_micros: int = 0) -> admin_pb2.CreateAccountResponse:
        return self._do(
            self.admin.CreateAccount,
            admin_pb2.CreateAccountRequest(name=name, initial_credit_micros=initial_credit_micros),
        )

    def credit_wallet(self, account_id: str, amount_micros: int) -> admin_pb2.Account:
        request = admin_pb2.CreditWalletRequest(account_id=account_id, amount_micros=amount_micros)
        return self._do(self.admin.CreditWallet, request).account

    def upsert_price(self, price: usage_pb2.Price) -> usage_pb2.Price:
        return self._do(self.admin.UpsertPrice, admin_pb2.UpsertPriceRequest(price=price)).price

    def apply_catalog(self, prices: list[usage_pb2.Price]) -> int:
        return self._do(self.admin.ApplyCatalog, admin_pb2.ApplyCatalogRequest(prices=prices)).added

    # keys (master key) ----------------------------------------------------

    def create_key(
        self,
        name: str,
        scope: str = "standard",
        cap_micros: int | None = None,
        cap_period: str = "lifetime",
        strict: bool = False,
        allowed_models: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        rate_limits: keys_pb2.RateLimits | None = None,
        expires_ms: int | None = None,
    ) -> tuple[keys_pb2.Key, str]:
        request = keys_pb2.CreateKeyRequest(
            name=name,
            scope=SCOPES[scope],
            cap_period=PERIODS[cap_period],
            strict=strict,
            allowed_models=list(allowed_models),
            metadata=dict(metadata or {}),
            rate_limits=rate_limits,
        )
        if cap_micros is not None:
            request.cap_micros = cap_micros
        if expires_ms is not None:
            request.expires_ms = expires_ms
        response = self._do(self.keys.CreateKey, request)
        return response.key, response.secret

    def get_key(self, key_id: str) -> keys_pb2.Key:
        return self._do(self.keys.GetKey, keys_pb2.GetKeyRequest(key_id=key_id)).key

    def list_keys(
        self, page_size: int = 0, page_token: str = "", include_revoked: bool = False
    ) -> keys_pb2.ListKeysResponse:
        request = keys_pb2.ListKeysRequest(
            page_size=page_size, page_token=page_token, include_revoked=include_revoked
        )
        return self._do(self.keys.ListKeys, request)

    def iter_keys(self, include_revoked: bool = False) -> Iterator[keys_pb2.Key]:
        token = ""
        while True:
            page = self.list_keys(page_token=token, include_revoked=include_revoked)
            yield from page.keys
            token = page.next_page_token
            if not token:
                return

    def update_key(
        self,
        key_id: str,
        name: str | None = None,
        cap_micros: int | None = None,
        remove_cap: bool = False,
        cap_period: str | None = None,
        strict: bool | None = None,
        allowed_models: Sequence[str] | None = None,
        rate_limits: keys_pb2.RateLimits | None = None,
        expires_ms: int | None = None,
        remove_expiry: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> keys_pb2.Key:
        """Changes what is given; `metadata` replaces the whole map ({} clears it)."""
        request = keys_pb2.UpdateKeyRequest(key_id=key_id, remove_cap=remove_cap, rate_limits=rate_limits)
        request.remove_expiry = remove_expiry
        if name is not None:
            request.name = name
        if cap_micros is not None:
            request.cap_micros = cap_micros
        if cap_period is not None:
            request.cap_period = PERIODS[cap_period]
        if strict is not None:
            request.strict = strict
        if allowed_models is not None:
            request.allowed_models.CopyFrom(keys_pb2.ModelList(models=list(allowed_models)))
        if expires_ms is not None:
            request.expires_ms = expires_ms
        if metadata is not None:
            request.metadata.CopyFrom(keys_pb2.Metadata(entries=dict(metadata)))
        return self._do(self.keys.UpdateKey, request).key

    def rotate_key(self, key_id: str, grace_ms: int | None = None) -> tuple[keys_pb2.Key, str]:
        """A new secret for the key (shown once); the old one works for grace_ms (None: 24 h)."""
        request = keys_pb2.RotateKeyRequest(key_id=key_id)
        if grace_ms is not None:
            request.grace_ms = grace_ms
        response = self._do(self.keys.RotateKey, request)
        return response.key, response.secret

    def revoke_key(self, key_id: str) -> keys_pb2.Key:
        return self._do(self.keys.RevokeKey, keys_pb2.RevokeKeyRequest(key_id=key_id)).key

    # usage ----------------------------------------------------------------

    def get_usage(self, from_ms: int, to_ms: int, group_by: str = "") -> usage_pb2.GetUsageResponse:
        """group_by "metadata.<key>" also totals usage per value of that key's tag."""
        request = usage_pb2.GetUsageRequest(from_ms=from_ms, to_ms=to_ms, group_by=group_by)
        return self._do(self.usage.GetUsage, request)

    def list_usage_events(
        self, key_id: str, page_size: int = 0, page_token: str = ""
    ) -> usage_pb2.ListUsageEventsResponse:
        request = usage_pb2.ListUsageEventsRequest(key_id=key_id, page_size=page_size, page_token=page_token)
        return self._do(self.usage.ListUsageEvents, request)

    def list_prices(self, at_ms: int = 0, include_history: bool = False) -> usage_pb2.ListPricesResponse:
        request = usage_pb2.ListPricesRequest(at_ms=at_ms, include_history=include_history)
        return self._do(self.usage.ListPrices, request)

    # webhooks (master key) ------------------------------------------------

    def set_webhook_endpoint(
        self, url: str, event_types: Sequence[str] = (), rotate_secret: bool = False
    ) -> webhooks_pb2.SetWebhookEndpointResponse:
        """Returns the endpoint and, when one was made, its signing secret (shown once)."""
        request = webhooks_pb2.SetWebhookEndpointRequest(
            url=url, event_types=list(event_types), rotate_secret=rotate_secret
        )
        return self._do(self.webhooks.SetWebhookEndpoint, request)

    def get_webhook_endpoint(self) -> webhooks_pb2.WebhookEndpoint:
        return self._do(self.webhooks.GetWebhookEndpoint, webhooks_pb2.GetWebhookEndpointRequest()).endpoint

    def retry_webhook_delivery(self, event_id: str) -> webhooks_pb2.WebhookDelivery:
        request = webhooks_pb2.RetryWebhookDeliveryRequest(event_id=event_id)
        return self._do(self.webhooks.RetryWebhookDelivery, request).delivery

    def delete_webhook_endpoint(self) -> int:
        request = webhooks_pb2.DeleteWebhookEndpointRequest()
        return self._do(self.webhooks.DeleteWebhookEndpoint, request).dropped_deliveries

    def set_key_thresholds(self, key_id: str, percents: Sequence[int]) -> list[int]:
        request = webhooks_pb2.SetKeyThresholdsRequest(key_id=key_id, percents=list(percents))
        return list(self._do(self.webhooks.SetKeyThresholds, request).percents)

    def get_key_thresholds(self, key_id: str) -> list[int]:
        request = webhooks_pb2.GetKeyThresholdsRequest(key_id=key_id)
        return list(self._do(self.webhooks.GetKeyThresholds, request).percents)

    def set_wallet_threshold(self, low_micros: int | None) -> int | None:
        response = self._do(
            self.webhooks.SetWalletThreshold, webhooks_pb2.SetWalletThresholdRequest(low_micros=low_micros)
        )
        return response.low_micros if response.HasField("low_micros") else None

    def list_webhook_deliveries(
        self, status: int = 0, page_size: int = 0, page_token: str = ""
    ) -> webhooks_pb2.ListWebhookDeliveriesResponse:
        request = webhooks_pb2.ListWebhookDeliveriesRequest(
            status=status,  # type: ignore[arg-type]
            page_size=page_size,
            page_token=page_token,
        )
        return self._do(self.webhooks.ListWebhookDeliveries, request)

    # data plane (service token) -------------------------------------------

    def lookup_key(self, secret_sha256: bytes) -> keys_pb2.Key:
        return self._do(self.keys.LookupKey, keys_pb2.LookupKeyRequest(secret_sha256=secret_sha256)).key

    def watch_keys(self, after_seq: int = 0) -> KeyStream:
        """Key changes as they happen. Cancel with `.cancel()` on the returned iterator."""
        stream = self.keys.WatchKeys(keys_pb2.WatchKeysRequest(after_seq=after_seq), metadata=self._metadata)
        return stream

    def reserve(
        self,
        key_id: str,
        request_id: str,
        amount_micros: int,
        ttl_ms: int = 0,
        return_grant_id: str = "",
        return_micros: int = 0,
        tokens: int = 0,
    ) -> usage_pb2.ReserveResponse:
        request = usage_pb2.ReserveRequest(
            key_id=key_id,
            request_id=request_id,
            amount_micros=amount_micros,
            ttl_ms=ttl_ms,
            return_grant_id=return_grant_id,
            return_micros=return_micros,
            tokens=tokens,
        )
        return self._do(self.usage.Reserve, request)

    def grant(
        self,
        key_id: str,
        grant_id: str,
        want_micros: int,
        min_micros: int,
        ttl_ms: int = 0,
        want_slice: usage_pb2.RateSlice | None = None,
        min_slice: usage_pb2.RateSlice | None = None,
    ) -> usage_pb2.GrantResponse:
        request = usage_pb2.GrantRequest(
            key_id=key_id,
            grant_id=grant_id,
            want_micros=want_micros,
            min_micros=min_micros,
            ttl_ms=ttl_ms,
            want_slice=want_slice,
            min_slice=min_slice,
        )
        return self._do(self.usage.Grant, request)

    def settle(self, request: usage_pb2.SettleRequest) -> usage_pb2.SettleResponse:
        return self._do(self.usage.Settle, request)

    def settle_batch(
        self, settlements: Sequence[usage_pb2.SettleRequest], releases: Sequence[str] = ()
    ) -> usage_pb2.SettleBatchResponse:
        request = usage_pb2.SettleBatchRequest(
            settlements=settlements, releases=[usage_pb2.ReleaseRequest(request_id=r) for r in releases]
        )
        return self._do(self.usage.SettleBatch, request)

    def release(
        self,
        request_id: str,
        amount_micros: int | None = None,
        return_slice: usage_pb2.RateSlice | None = None,
    ) -> bool:
        request = usage_pb2.ReleaseRequest(
            request_id=request_id, amount_micros=amount_micros, return_slice=return_slice
        )
        return self._do(self.usage.Release, request).released

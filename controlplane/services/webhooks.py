"""spendgate.v1.WebhookService (master key, its own account)."""

from __future__ import annotations

import grpc

from controlplane import auth
from controlplane.errors import InvalidArgument
from controlplane.webhooks import STATUSES, Delivery, Endpoint, WebhookStore
from spendgate.v1 import webhooks_pb2, webhooks_pb2_grpc

_STATUS_PB = {
    "pending": webhooks_pb2.WEBHOOK_DELIVERY_STATUS_PENDING,
    "delivered": webhooks_pb2.WEBHOOK_DELIVERY_STATUS_DELIVERED,
    "dead": webhooks_pb2.WEBHOOK_DELIVERY_STATUS_DEAD,
}
assert set(_STATUS_PB) == set(STATUSES)


def endpoint_to_pb(endpoint: Endpoint) -> webhooks_pb2.WebhookEndpoint:
    msg = webhooks_pb2.WebhookEndpoint(
        url=endpoint.url,
        event_types=list(endpoint.event_types),
        secret_prefix=endpoint.secret_prefix,
        created_ms=endpoint.created_ms,
        updated_ms=endpoint.updated_ms,
    )
    if endpoint.wallet_low_micros is not None:
        msg.wallet_low_micros = endpoint.wallet_low_micros
    return msg


def delivery_to_pb(d: Delivery) -> webhooks_pb2.WebhookDelivery:
    return webhooks_pb2.WebhookDelivery(
        event_id=d.event_id,
        event_type=d.event_type,
        status=_STATUS_PB[d.status],
        attempts=d.attempts,
        next_attempt_ms=d.next_attempt_ms if d.status == "pending" else 0,
        last_error=d.last_error,
        last_status_code=d.last_status_code,
        created_ms=d.created_ms,
        delivered_ms=d.delivered_ms or 0,
        body=d.body,
    )


class WebhookService(webhooks_pb2_grpc.WebhookServiceServicer):
    def __init__(self, store: WebhookStore) -> None:
        self._store = store

    def SetWebhookEndpoint(
        self, request: webhooks_pb2.SetWebhookEndpointRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.SetWebhookEndpointResponse:
        endpoint, secret = self._store.set_endpoint(
            auth.current_account(), request.url, tuple(request.event_types), request.rotate_secret
        )
        return webhooks_pb2.SetWebhookEndpointResponse(endpoint=endpoint_to_pb(endpoint), secret=secret)

    def GetWebhookEndpoint(
        self, request: webhooks_pb2.GetWebhookEndpointRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.GetWebhookEndpointResponse:
        endpoint = self._store.get_endpoint(auth.current_account())
        return webhooks_pb2.GetWebhookEndpointResponse(endpoint=endpoint_to_pb(endpoint))

    def DeleteWebhookEndpoint(
        self, request: webhooks_pb2.DeleteWebhookEndpointRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.DeleteWebhookEndpointResponse:
        dropped = self._store.delete_endpoint(auth.current_account())
        return webhooks_pb2.DeleteWebhookEndpointResponse(dropped_deliveries=dropped)

    def SetKeyThresholds(
        self, request: webhooks_pb2.SetKeyThresholdsRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.SetKeyThresholdsResponse:
        percents = self._store.set_key_thresholds(
            auth.current_account(), request.key_id, tuple(request.percents)
        )
        return webhooks_pb2.SetKeyThresholdsResponse(key_id=request.key_id, percents=list(percents))

    def GetKeyThresholds(
        self, request: webhooks_pb2.GetKeyThresholdsRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.GetKeyThresholdsResponse:
        percents = self._store.key_thresholds(auth.current_account(), request.key_id)
        return webhooks_pb2.GetKeyThresholdsResponse(key_id=request.key_id, percents=list(percents))

    def SetWalletThreshold(
        self, request: webhooks_pb2.SetWalletThresholdRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.SetWalletThresholdResponse:
        low = request.low_micros if request.HasField("low_micros") else None
        stored = self._store.set_wallet_low(auth.current_account(), low)
        response = webhooks_pb2.SetWalletThresholdResponse()
        if stored is not None:
            response.low_micros = stored
        return response

    def ListWebhookDeliveries(
        self, request: webhooks_pb2.ListWebhookDeliveriesRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.ListWebhookDeliveriesResponse:
        status = next((name for name, value in _STATUS_PB.items() if value == request.status), None)
        if status is None and request.status != webhooks_pb2.WEBHOOK_DELIVERY_STATUS_UNSPECIFIED:
            raise InvalidArgument("status", f"unknown value {request.status}")
        page = self._store.deliveries(
            auth.current_account(), status or "", request.page_size, request.page_token
        )
        return webhooks_pb2.ListWebhookDeliveriesResponse(
            deliveries=[delivery_to_pb(d) for d in page.items], next_page_token=page.next_token
        )

    def RetryWebhookDelivery(
        self, request: webhooks_pb2.RetryWebhookDeliveryRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.RetryWebhookDeliveryResponse:
        delivery = self._store.retry(auth.current_account(), request.event_id)
        return webhooks_pb2.RetryWebhookDeliveryResponse(delivery=delivery_to_pb(delivery))

"""Stripe Billing meter events, through the official `stripe` package.

One `POST /v1/billing/meter_events` per event (the v1 endpoint takes one; the v2
meter-event stream batches but acknowledges asynchronously, which a cursor cannot
trust). Idempotency, twice: the event's `identifier` is our request_id (Stripe
deduplicates meter events on it for at least 24 hours), and the request's
`Idempotency-Key` is the same string, so a retried request is answered with the
first answer rather than a second event. `payload.value` is an integer as a string
(Stripe takes whole numbers only): micro-USD or a unit count, never a decimal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import stripe
from stripe._base_address import BaseAddresses

from controlplane.exports.sink import DeliveryFailed, ExportEvent, Template, render_all

MAX_IDENTIFIER = 100  # Stripe's limit


@dataclass(frozen=True)
class StripeSettings:
    api_key: str
    event_name: str
    customer: Template  # -> payload[customer_key]
    value: str = "cost_micros"
    base_url: str = ""  # empty: https://api.stripe.com
    customer_key: str = "stripe_customer_id"  # the meter's customer_mapping.event_payload_key
    value_key: str = "value"  # the meter's value_settings.event_payload_key
    identifier_prefix: str = ""  # several Stripe sinks on one account need distinct identifiers
    timeout_seconds: float = 30.0


class StripeSink:
    kind = "stripe"

    def __init__(self, settings: StripeSettings) -> None:
        self.settings = settings
        addresses: BaseAddresses = {"api": settings.base_url} if settings.base_url else {}
        self._client = stripe.StripeClient(
            settings.api_key,
            base_addresses=addresses,
            max_network_retries=0,  # the exporter retries, with backoff, from the cursor
            http_client=stripe.RequestsClient(timeout=settings.timeout_seconds),
        )

    def deliver(self, batch: Sequence[ExportEvent]) -> None:
        s = self.settings
        customers, unmapped = render_all(s.customer, batch)
        for done, (event, customer) in enumerate(zip(batch, customers, strict=False)):
            identifier = s.identifier_prefix + event.request_id
            if len(identifier) > MAX_IDENTIFIER:
                raise DeliveryFailed(f"identifier {identifier!r} is over {MAX_IDENTIFIER} characters", done)
            try:
                self._client.v1.billing.meter_events.create(
                    params={
                        "event_name": s.event_name,
                        "identifier": identifier,
                        "timestamp": event.ts_ms // 1000,
                        "payload": {s.customer_key: customer, s.value_key: str(event.value(s.value))},
                    },
                    options={"idempotency_key": identifier},
                )
            except stripe.StripeError as exc:
                status = exc.http_status or "no answer"
                raise DeliveryFailed(f"stripe ({status}): {exc.user_message or exc}", done) from exc
        if unmapped is not None:
            raise DeliveryFailed(str(unmapped), len(customers))

"""Lago events, through the official `lago-python-client`.

Batches of up to 100 go to `POST /api/v1/events/batch`. Idempotency: each event's
`transaction_id` is our request_id, which Lago keeps unique. Lago refuses a whole
batch (422, `value_already_exist` on the indexes concerned) when some of it was
stored before — exactly what a resend after a crash looks like — so those events
count as acknowledged and the rest of the batch is sent again without them.

Mapping: `external_subscription_id` from a template (the client's Event model has
no `external_customer_id`). Properties carry integer micro-USD and token counts;
`precise_total_amount_cents`, when asked for, is the exact decimal string of
micro-USD / 10 000 (a cent is 10 000 micro-USD), never a float."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from lago_python_client.client import Client
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models.event import BatchEvent, Event

from controlplane.exports.sink import DeliveryFailed, ExportEvent, Template, render_all

MAX_BATCH = 100  # Lago's limit per batch request


def cents(micros: int) -> str:
    """Micro-USD as an exact decimal count of cents: 1234567 -> '123.4567'."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), 10_000)
    return f"{sign}{whole}.{frac:04d}"


def lago_timestamp(ts_ms: int) -> str:
    """Seconds since the epoch with milliseconds, as Lago accepts it, exactly."""
    return f"{ts_ms // 1000}.{ts_ms % 1000:03d}"


@dataclass(frozen=True)
class LagoSettings:
    api_key: str
    code: str  # the billable metric's code
    subscription: Template  # -> external_subscription_id
    base_url: str = ""  # empty: https://api.getlago.com/
    amount: str = ""  # "cost_micros" / "total_micros": also send precise_total_amount_cents
    transaction_prefix: str = ""


class LagoSink:
    kind = "lago"

    def __init__(self, settings: LagoSettings) -> None:
        self.settings = settings
        self._client = Client(api_key=settings.api_key, api_url=settings.base_url, max_retries=0)

    def _event(self, event: ExportEvent, subscription: str) -> Event:
        s = self.settings
        return Event(
            transaction_id=s.transaction_prefix + event.request_id,
            external_subscription_id=subscription,
            code=s.code,
            timestamp=lago_timestamp(event.ts_ms),
            precise_total_amount_cents=cents(event.value(s.amount)) if s.amount else None,
            properties=event.properties(),
        )

    def deliver(self, batch: Sequence[ExportEvent]) -> None:
        subscriptions, unmapped = render_all(self.settings.subscription, batch)
        pending = [self._event(e, sub) for e, sub in zip(batch, subscriptions, strict=False)]
        for start in range(0, len(pending), MAX_BATCH):
            self._send(pending[start : start + MAX_BATCH], delivered_before=start)
        if unmapped is not None:
            raise DeliveryFailed(str(unmapped), len(subscriptions))

    def _send(self, events: list[Event], delivered_before: int) -> None:
        while events:
            try:
                self._client.events.batch_create(BatchEvent(events=events))
                return
            except LagoApiError as exc:
                stored = _already_stored(exc, len(events))
                if not stored:
                    raise DeliveryFailed(
                        f"lago ({exc.status_code}): {exc.response or exc.detail}", delivered_before
                    ) from exc
                events = [e for i, e in enumerate(events) if i not in stored]
            except httpx.HTTPError as exc:  # no answer (the client posts with httpx)
                raise DeliveryFailed(f"lago: {exc}", delivered_before) from exc


def _already_stored(exc: LagoApiError, size: int) -> set[int]:
    """The indexes of a 422 whose every error is `transaction_id: value_already_exist`; else empty."""
    body: Any = exc.response
    if exc.status_code != 422 or not isinstance(body, dict):
        return set()
    details = body.get("error_details")
    if not isinstance(details, dict) or not details:
        return set()
    stored: set[int] = set()
    for index, errors in details.items():
        if not (isinstance(errors, dict) and errors == {"transaction_id": ["value_already_exist"]}):
            return set()
        if not (str(index).isdigit() and int(index) < size):
            return set()
        stored.add(int(index))
    return stored

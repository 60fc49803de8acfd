"""OpenMeter CloudEvents, through the official `openmeter` package.

A batch is one `POST /api/v1/events` (`application/cloudevents-batch+json`).
Idempotency: OpenMeter deduplicates on the CloudEvent's `id` and `source`; `id` is
our request_id and `source` is fixed per sink. `subject` (the customer, in
OpenMeter's terms) comes from a template, by default the key id. `data` carries
integer micro-USD and token counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from corehttp.exceptions import BaseError
from openmeter import Client
from openmeter.models import Event

from controlplane.exports.sink import DeliveryFailed, ExportEvent, Template, render_all


@dataclass(frozen=True)
class OpenMeterSettings:
    api_key: str
    subject: Template
    event_type: str = "spendgate.usage"
    source: str = "spendgate"
    base_url: str = "https://openmeter.cloud"
    timeout_seconds: float = 30.0


class OpenMeterSink:
    kind = "openmeter"

    def __init__(self, settings: OpenMeterSettings) -> None:
        self.settings = settings
        self._client = Client(
            endpoint=settings.base_url,
            token=settings.api_key or None,
            retry_total=0,  # the exporter retries, with backoff, from the cursor
            connection_timeout=settings.timeout_seconds,
            read_timeout=settings.timeout_seconds,
        )

    def _event(self, event: ExportEvent, subject: str) -> Event:
        s = self.settings
        return Event(
            id=event.request_id,
            source=s.source,
            specversion="1.0",
            type=s.event_type,
            subject=subject,
            time=datetime.fromtimestamp(event.ts_ms // 1000, UTC).replace(
                microsecond=event.ts_ms % 1000 * 1000
            ),
            datacontenttype="application/json",
            data=dict(event.properties()),
        )

    def deliver(self, batch: Sequence[ExportEvent]) -> None:
        subjects, unmapped = render_all(self.settings.subject, batch)
        events = [self._event(e, sub) for e, sub in zip(batch, subjects, strict=False)]
        if events:
            try:
                self._client.events.ingest_events(events)
            except BaseError as exc:
                raise DeliveryFailed(f"openmeter: {exc}") from exc
        if unmapped is not None:
            raise DeliveryFailed(str(unmapped), len(subjects))

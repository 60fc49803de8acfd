"""What every sink is given (`ExportEvent`) and what it must do (`Sink`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol

from controlplane.money import Units

# Integer fields an event carries to a sink; each can be a meter's value.
VALUE_FIELDS = ("cost_micros", "fee_micros", "total_micros", "requests", *(f.name for f in fields(Units)))


@dataclass(frozen=True)
class ExportEvent:
    """One usage event, with what a mapping may refer to (the key's name and metadata)."""

    seq: int
    request_id: str
    key_id: str
    account_id: str
    ts_ms: int
    provider: str
    model: str
    units: Units
    cost_micros: int
    fee_micros: int
    status: str
    http_status: int
    estimated: bool
    service_tier: str = ""
    key_name: str = ""
    key_metadata: Mapping[str, str] = field(default_factory=dict)

    def value(self, name: str) -> int:
        """An integer count: micro-USD, tokens or other units, or 1 (`requests`)."""
        if name == "total_micros":
            return self.cost_micros + self.fee_micros
        if name == "requests":
            return 1
        if name in ("cost_micros", "fee_micros"):
            return int(getattr(self, name))
        return int(getattr(self.units, name))

    def properties(self) -> dict[str, int | str | bool]:
        """The event as flat JSON: integers stay integers (micro-USD, never a float)."""
        props: dict[str, int | str | bool] = {
            "request_id": self.request_id,
            "key_id": self.key_id,
            "account_id": self.account_id,
            "provider": self.provider,
            "model": self.model,
            "status": self.status,
            "estimated": self.estimated,
            "cost_micros": self.cost_micros,
            "fee_micros": self.fee_micros,
            "total_micros": self.cost_micros + self.fee_micros,
        }
        for f in fields(Units):
            count = getattr(self.units, f.name)
            if count or f.name in ("input_tokens", "output_tokens"):
                props[f.name] = count
        if self.service_tier:
            props["service_tier"] = self.service_tier
        return props


class DeliveryFailed(Exception):
    """The sink did not take the batch. `delivered` leading events of it were acknowledged
    (a sink sending one request per event may get that far), so the cursor may move past them."""

    def __init__(self, message: str, delivered: int = 0) -> None:
        super().__init__(message)
        self.delivered = delivered


class Sink(Protocol):
    """A billing system. `deliver` returns once the sink has acknowledged every event of
    the batch, or raises DeliveryFailed. It may be called again with events it already
    took (after a crash): it must send each with its idempotency key, our request_id."""

    kind: str

    def deliver(self, batch: Sequence[ExportEvent]) -> None: ...


_FIELD = re.compile(r"\{([^{}]*)\}")
_PLAIN = ("key_id", "account_id", "key_name")


class Template:
    """How a key maps to a customer, subscription or subject in the billing system: a string
    with `{key_id}`, `{account_id}`, `{key_name}` or `{metadata.NAME}` (the key's metadata,
    set at mint: `spendgate keys mint --meta stripe_customer_id=cus_…`). An event whose key
    lacks a field the template names cannot be mapped: the sink stops there (and says so)
    rather than bill the wrong customer or skip the event."""

    def __init__(self, text: str, what: str) -> None:
        for name in _FIELD.findall(text):
            if name not in _PLAIN and not (name.startswith("metadata.") and len(name) > len("metadata.")):
                raise ValueError(
                    f"{what}: unknown field {{{name}}} (use key_id, account_id, key_name or metadata.NAME)"
                )
        if not text:
            raise ValueError(f"{what}: must not be empty")
        self.text = text
        self.what = what

    def render(self, event: ExportEvent) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in _PLAIN:
                value = str(getattr(event, name))
            else:
                value = event.key_metadata.get(name.removeprefix("metadata."), "")
            if not value:
                raise DeliveryFailed(
                    f"key {event.key_id} has no {name} for {self.what} {self.text!r} "
                    f"(event {event.request_id}); set it and the export resumes"
                )
            return value

        return _FIELD.sub(one, self.text)


def render_all(template: Template, batch: Sequence[ExportEvent]) -> tuple[list[str], DeliveryFailed | None]:
    """Map the batch's leading events; stop at the first that cannot be mapped."""
    out: list[str] = []
    for event in batch:
        try:
            out.append(template.render(event))
        except DeliveryFailed as exc:
            return out, exc
    return out, None

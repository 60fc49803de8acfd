"""What the data plane records of a finished request, as its own frozen values:
a `Settlement` (what it consumed) or a `Release` (nothing to bill), and why the
control plane refused one (`Refusal`). Protobuf appears only at the edges: sending
them (budget.py) and writing them to disk (spool.py), through `to_pb` / `from_pb`."""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from spendgate.contract import enum_names
from spendgate.v1 import usage_pb2

_UNITS = tuple(f.name for f in usage_pb2.Units.DESCRIPTOR.fields)
_UNIT_NAMES = frozenset(_UNITS)


class Outcome(enum.Enum):
    """How the response ended (the event's status)."""

    OK = "ok"
    UPSTREAM_ERROR = "upstream_error"
    CLIENT_DISCONNECTED = "client_disconnected"
    UPSTREAM_ABORTED = "upstream_aborted"


class Refusal(enum.Enum):
    """Why the control plane did not take a settlement (SettleOutcome.refusal)."""

    UNKNOWN_KEY = "unknown_key"  # may pass: a key this control plane does not know yet
    UNKNOWN_MODEL = "unknown_model"
    UNPRICED_UNIT = "unpriced_unit"
    CONFLICT = "conflict"
    INVALID = "invalid"


_OUTCOMES = {Outcome(name): value for value, name in enum_names(usage_pb2.EventStatus).items()}
_REFUSALS = {value: Refusal(name) for value, name in enum_names(usage_pb2.SettleRefusal).items()}
assert set(_OUTCOMES) == set(Outcome) and set(_REFUSALS.values()) == set(Refusal), (
    "out of step with the proto"
)


def refusal_from_pb(value: int) -> Refusal:
    return _REFUSALS.get(value, Refusal.INVALID)


def refusal_name(refusal: Refusal) -> str:
    """The proto's name for it, e.g. SETTLE_REFUSAL_UNKNOWN_MODEL (the dead-letter file's spelling)."""
    return usage_pb2.SettleRefusal.Name(next(v for v, r in _REFUSALS.items() if r is refusal))


@dataclass(frozen=True)
class Settlement:
    request_id: str
    key_id: str
    provider: str
    model: str
    units: Mapping[str, int] = field(default_factory=dict)  # Units field -> count; absent is 0
    started_ms: int = 0
    latency_ms: int = 0
    ttfb_ms: int = 0
    outcome: Outcome = Outcome.OK
    http_status: int = 200
    estimated: bool = False  # units estimated rather than reported by the provider
    service_tier: str = ""
    grant_id: str = ""  # admitted against this worker's grant rather than a reservation of its own

    def __post_init__(self) -> None:
        assert _UNIT_NAMES.issuperset(self.units), f"not units: {sorted(set(self.units) - _UNIT_NAMES)}"
        object.__setattr__(self, "units", MappingProxyType(dict(self.units)))

    def unit(self, name: str) -> int:
        return self.units.get(name, 0)

    def to_pb(self) -> usage_pb2.SettleRequest:
        """Built once (the spool and the delivery both want it): not to be modified."""
        return self._pb

    @functools.cached_property
    def _pb(self) -> usage_pb2.SettleRequest:
        return usage_pb2.SettleRequest(
            request_id=self.request_id,
            key_id=self.key_id,
            provider=self.provider,
            model=self.model,
            units=usage_pb2.Units(
                **{name: n for name, n in self.units.items() if n}
            ),  # (0 is proto3's default)
            started_ms=self.started_ms,
            latency_ms=self.latency_ms,
            ttfb_ms=self.ttfb_ms,
            status=_OUTCOMES[self.outcome],
            http_status=self.http_status,
            estimated=self.estimated,
            service_tier=self.service_tier,
            grant_id=self.grant_id,
        )

    @classmethod
    def from_pb(cls, msg: usage_pb2.SettleRequest) -> Settlement:
        names = {value: outcome for outcome, value in _OUTCOMES.items()}
        return cls(
            request_id=msg.request_id,
            key_id=msg.key_id,
            provider=msg.provider,
            model=msg.model,
            units={name: getattr(msg.units, name) for name in _UNITS if getattr(msg.units, name)},
            started_ms=msg.started_ms,
            latency_ms=msg.latency_ms,
            ttfb_ms=msg.ttfb_ms,
            outcome=names.get(msg.status, Outcome.OK),
            http_status=msg.http_status,
            estimated=msg.estimated,
            service_tier=msg.service_tier,
            grant_id=msg.grant_id,
        )


@dataclass(frozen=True)
class Release:
    """Give a request's whole hold back, by request id (Release is idempotent)."""

    request_id: str


Item = Settlement | Release


@dataclass(frozen=True)
class Charged:
    """What the control plane charged a settled request, and what its key may still spend."""

    cost_micros: int
    key_remaining_micros: int | None  # None: the key has no cap

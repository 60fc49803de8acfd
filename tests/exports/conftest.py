"""Fixtures for the export tests: a control plane with a key and usage events in it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from controlplane.exports.cursors import Cursors
from controlplane.keystore import KeySpec
from controlplane.ledger import Settlement
from controlplane.money import Units
from controlplane.server import ControlPlane

MAPPED = {"stripe_customer_id": "cus_42", "lago_subscription_id": "sub_42", "customer": "user_42"}


@dataclass
class Events:
    plane: ControlPlane
    key_id: str
    account_id: str
    request_ids: list[str]

    @property
    def cursors(self) -> Cursors:
        return Cursors(self.plane.engine)

    def settle(self, n: int, key_id: str = "", prefix: str = "req") -> list[str]:
        start = len(self.request_ids)
        ids = [f"{prefix}_{start + i:04d}" for i in range(n)]
        for i, rid in enumerate(ids):
            self.plane.ledger.settle(
                Settlement(
                    request_id=rid,
                    key_id=key_id or self.key_id,
                    provider="openai",
                    model="gpt-4o-mini",
                    units=Units(input_tokens=1000 + i, output_tokens=500 + 7 * i),
                    latency_ms=100,
                )
            )
        self.request_ids.extend(ids)
        return ids


@pytest.fixture
def events(make_plane: Callable[..., ControlPlane], db_url: str) -> Events:
    plane = make_plane(db_url, exports=[])
    account, _master, _secret = plane.keystore.create_account("acme", 100_000_000)
    key, _secret = plane.keystore.create_key(account.id, KeySpec("user_42", metadata=tuple(MAPPED.items())))
    return Events(plane, key.id, account.id, [])

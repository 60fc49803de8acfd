"""The control plane's /metrics, scraped over HTTP from a real control plane on both
databases: RPCs by method and code (an aborted one included), the ledger's answers read
from its responses, and the gauges counted in the database at scrape time."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from clients.client import ControlPlaneClient, SpendgateRpcError
from controlplane.exports import Cursors
from controlplane.server import ControlPlane
from dataplane.settlement import Settlement
from tests.conftest import FakeClock

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(plane: ControlPlane) -> Samples:
    response = httpx.get(f"http://{plane.config.host}:{plane.metrics_port}/metrics", timeout=10)
    assert response.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def rpcs(samples: Samples, method: str, code: str) -> float:
    labels = {"service": "spendgate.v1.UsageService", "method": method, "code": code}
    return samples.get(("spendgate_controlplane_rpcs_total", frozenset(labels.items())), 0.0)


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_rpcs_the_ledgers_answers_and_the_stored_backlogs_are_counted(
    make_plane: Callable[..., ControlPlane], db_url: str, clock: FakeClock
) -> None:
    plane = make_plane(db_url, metrics_port=0)
    with ControlPlaneClient(plane.address, plane.tokens.admin) as operator:
        created = operator.create_account("metered", 10_000_000)
    with (
        ControlPlaneClient(plane.address, created.master_key_secret) as master,
        ControlPlaneClient(plane.address, plane.tokens.service) as service,
    ):
        key, _ = master.create_key("user")
        capped, _ = master.create_key("capped", cap_micros=0)
        assert service.reserve(key.id, "req-1", 1_000).granted
        assert service.reserve(key.id, "req-2", 1_000).granted  # still held at the scrape
        assert not service.reserve(capped.id, "req-3", 1_000).granted
        settlement = Settlement("req-1", key.id, "openai", "gpt-4o-mini", {"input_tokens": 10}).to_pb()
        assert not service.settle(settlement).duplicate
        assert service.settle(settlement).duplicate  # a retry
        unknown = Settlement("req-2", key.id, "openai", "no-such-model", {"input_tokens": 10}).to_pb()
        with pytest.raises(SpendgateRpcError) as refused:
            service.settle(unknown)
        Cursors(plane.engine).ensure("billing", "stripe", start_at_end=False, now_ms=clock())

    samples = scrape(plane)
    assert rpcs(samples, "Reserve", "OK") == 3
    assert rpcs(samples, "Settle", "OK") == 2
    assert rpcs(samples, "Settle", refused.value.code.name) == 1
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert one(samples, "spendgate_reservations_total", result="granted") == 2
    assert one(samples, "spendgate_reservations_total", result="key_cap") == 1
    assert one(samples, "spendgate_settlements_total", result="settled") == 1
    assert one(samples, "spendgate_settlements_total", result="duplicate") == 1
    labels = {"service": "spendgate.v1.UsageService", "method": "Reserve"}
    assert one(samples, "spendgate_controlplane_rpc_duration_seconds_count", **labels) == 3
    assert one(samples, "spendgate_reservations_active") == 1  # req-2
    assert one(samples, "spendgate_export_backlog_events", sink="billing", kind="stripe") == 1
    assert one(samples, "spendgate_webhook_outbox_events", status="pending") == 0

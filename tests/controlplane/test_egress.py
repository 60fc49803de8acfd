"""Webhooks may not reach the operator's own network unless the operator allows it
(controlplane/egress.py): over real gRPC to a real control plane, delivered (or not)
over real HTTP to a receiver on loopback."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from clients.client import ControlPlaneClient, SpendgateRpcError
from controlplane import egress
from controlplane.server import ControlPlane
from spendgate.v1 import webhooks_pb2
from tests.controlplane.test_webhooks import CAP, deliveries, spend, wait_until
from tests.receiver import Receiver, running_receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


def account_on(plane: ControlPlane) -> tuple[ControlPlaneClient, ControlPlaneClient]:
    with ControlPlaneClient(plane.address, plane.tokens.admin) as admin:
        created = admin.create_account("egress", 100_000_000)
    return (
        ControlPlaneClient(plane.address, created.master_key_secret),
        ControlPlaneClient(plane.address, plane.tokens.service),
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "http://100.64.0.1/hook",  # shared address space (CGNAT)
        "http://169.254.169.254/latest/meta-data",  # a cloud's metadata service
        "http://[::1]:8080/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",  # IPv4 dressed as IPv6
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
    ],
)
def test_a_private_address_is_refused_when_configured(
    make_plane: Callable[..., ControlPlane], db_url: str, url: str
) -> None:
    master, _ = account_on(make_plane(db_url))
    with pytest.raises(SpendgateRpcError) as refused:
        master.set_webhook_endpoint(url, ())
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details.startswith("url") and "not a public address" in refused.value.details
    with pytest.raises(SpendgateRpcError):
        master.get_webhook_endpoint()  # nothing was stored


def test_a_name_that_resolves_to_loopback_is_not_delivered_to(
    make_plane: Callable[..., ControlPlane], db_url: str, receiver: Receiver
) -> None:
    plane = make_plane(db_url, webhook_retry_base_ms=50, webhook_poll_seconds=0.02, webhook_max_attempts=2)
    master, service = account_on(plane)
    url = receiver.url.replace("127.0.0.1", "localhost")  # a name: judged at delivery, once resolved
    master.set_webhook_endpoint(url, ())
    key, _ = master.create_key("u", cap_micros=CAP)
    spend(service, key.id, 3_000)  # 50 %
    wait_until(lambda: bool(deliveries(master, webhooks_pb2.WEBHOOK_DELIVERY_STATUS_DEAD)))
    (dead,) = deliveries(master)
    assert "not a public address" in dead.last_error and dead.attempts == 2
    assert receiver.attempts == []  # no byte reached it


def test_allowed_private_delivery_goes_to_the_checked_address_with_the_urls_host(
    make_plane: Callable[..., ControlPlane], db_url: str, receiver: Receiver
) -> None:
    plane = make_plane(db_url, webhook_allow_private=True, webhook_poll_seconds=0.02)
    master, service = account_on(plane)
    url = receiver.url.replace("127.0.0.1", "localhost")
    receiver.secret = master.set_webhook_endpoint(url, ()).secret
    key, _ = master.create_key("u", cap_micros=CAP)
    spend(service, key.id, 3_000)
    (attempt,) = receiver.wait_delivered(1)
    assert attempt.valid and attempt.host == url.split("/")[2]  # "localhost:PORT", not the address


def test_each_address_of_a_name_is_tried_until_one_connects(
    make_plane: Callable[..., ControlPlane],
    db_url: str,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name with two addresses, the first refusing connections (nothing listens on
    127.0.0.2): the event goes to the second, still under the name."""
    real = socket.getaddrinfo

    def two_addresses(host: str, *args: Any, **kwargs: Any) -> Any:
        if host != "hooks.example":
            return real(host, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0)) for ip in ("127.0.0.2", "127.0.0.1")]

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    plane = make_plane(db_url, webhook_allow_private=True, webhook_poll_seconds=0.02)
    master, service = account_on(plane)
    url = receiver.url.replace("127.0.0.1", "hooks.example")
    receiver.secret = master.set_webhook_endpoint(url, ()).secret
    key, _ = master.create_key("u", cap_micros=CAP)
    spend(service, key.id, 3_000)
    (attempt,) = receiver.wait_delivered(1)
    assert attempt.valid and attempt.host == url.split("/")[2]
    assert deliveries(master)[0].attempts == 1  # one attempt, two connections


def test_what_counts_as_public() -> None:
    public = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"]
    private = ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.1.1", "100.64.0.1"]
    private += ["::1", "fe80::1", "fd12::1", "::ffff:10.0.0.1", "0.0.0.0", "239.1.1.1", "ff02::1"]
    assert all(egress.is_public(ipaddress.ip_address(a)) for a in public)
    assert not any(egress.is_public(ipaddress.ip_address(a)) for a in private)

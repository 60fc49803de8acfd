"""A body the gateway refuses unread (issue 15.6): the client gets its answer and the
connection is closed, instead of both ends waiting on each other."""

from __future__ import annotations

import socket
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import Account, Running
from tests.e2e.test_caps_and_errors import sdk

BIG = 40 * 1024 * 1024  # over the default 32 MiB limit


def test_an_sdk_sending_too_large_a_body_gets_413_not_a_hang(
    gateway: Running, user_key: dict[str, object]
) -> None:
    started = time.monotonic()
    with sdk(gateway, user_key) as client, pytest.raises(openai.APIStatusError) as info:
        client.with_options(timeout=20).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * BIG}]
        )
    assert info.value.status_code == 413 and "limit of 33554432 bytes" in info.value.message
    assert time.monotonic() - started < 10


def test_a_large_body_with_a_bad_key_gets_401_not_a_hang(gateway: Running) -> None:
    with sdk(gateway, "sg_live_" + "x" * 43) as client, pytest.raises(openai.AuthenticationError):
        client.with_options(timeout=20).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * (8 * 1024 * 1024)}]
        )


def test_a_client_that_never_finishes_its_body_is_answered_and_disconnected(
    gateway: Running, user_key: dict[str, object]
) -> None:
    host, port = gateway.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as conn:
        conn.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
            + f"Authorization: Bearer {user_key['secret']}\r\n".encode()
            + f"Content-Type: application/json\r\nContent-Length: {BIG}\r\n\r\n".encode()
            + b"{"
            + b" " * (2 * 1024 * 1024)  # and then nothing more
        )
        received = b""
        while chunk := conn.recv(65536):  # until the gateway closes (a timeout fails the test)
            received += chunk
    head = received.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 413") and b"connection: close" in head


def test_the_key_api_refuses_a_body_over_its_limit(gateway: Running, account: Account) -> None:
    response = httpx.post(
        gateway.base + "/v1/keys",
        headers={"Authorization": f"Bearer {account.master_key}"},
        json={"name": "x" * (1024 * 1024)},
    )
    assert response.status_code == 413 and "limit of 65536 bytes" in response.json()["error"]["message"]
    assert response.headers["connection"] == "close"

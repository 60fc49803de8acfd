"""A real webhook receiver on loopback for the tests: it verifies every request's Standard
Webhooks signature with its own code (not spendgate's), answers with the status it is told
to, and records every attempt, so a test sees what a user's endpoint would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def verify(secret: str, msg_id: str, timestamp: str, body: bytes, signatures: str) -> bool:
    """Standard Webhooks verification, written from the spec."""
    key = base64.b64decode(secret.split("_", 1)[1])
    expected = base64.b64encode(
        hmac.new(key, msg_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256).digest()
    ).decode()
    return any(
        version == "v1" and hmac.compare_digest(sig, expected)
        for version, _, sig in (s.partition(",") for s in signatures.split(" "))
    )


@dataclass(frozen=True)
class Attempt:
    webhook_id: str
    timestamp: str
    signature: str
    body: bytes
    valid: bool
    answered: int
    started: float
    ended: float
    host: str = ""  # the Host header it came with

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class Receiver:
    def __init__(self) -> None:
        self.secret = ""
        self.status = 200  # what to answer
        self.fail_first = 0  # answer 500 to this many requests first
        self.delay = 0.0
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                started = time.monotonic()
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    if receiver.fail_first > 0:
                        receiver.fail_first -= 1
                        status = 500
                    else:
                        status = receiver.status
                valid = bool(receiver.secret) and verify(
                    receiver.secret,
                    self.headers.get("webhook-id", ""),
                    self.headers.get("webhook-timestamp", ""),
                    body,
                    self.headers.get("webhook-signature", ""),
                )
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                attempt = Attempt(
                    self.headers.get("webhook-id", ""),
                    self.headers.get("webhook-timestamp", ""),
                    self.headers.get("webhook-signature", ""),
                    body,
                    valid,
                    status,
                    started,
                    time.monotonic(),
                    self.headers.get("host", ""),
                )
                with receiver._lock:
                    receiver.attempts.append(attempt)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def delivered(self) -> list[Attempt]:
        """The attempts answered 2xx, in order."""
        with self._lock:
            return [a for a in self.attempts if 200 <= a.answered < 300]

    def wait_delivered(self, count: int, timeout: float = 15) -> list[Attempt]:
        deadline = time.monotonic() + timeout
        while len(self.delivered()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.delivered()

    def wait_attempts(self, count: int, timeout: float = 15) -> list[Attempt]:
        deadline = time.monotonic() + timeout
        while len(self.attempts) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        with self._lock:
            return list(self.attempts)


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver._thread.start()
    try:
        yield receiver
    finally:
        receiver._server.shutdown()
        receiver._server.server_close()

"""Delivering the webhook outbox: signed POSTs, retried with exponential backoff.

A row's life (all of it in the database, so a restart loses nothing):

    pending ──2xx──────────────────────────────► delivered
    pending ──failure, attempts < max_attempts─► pending, next_attempt_ms = now + backoff
    pending ──failure, attempts = max_attempts─► dead (kept, listed by ListWebhookDeliveries)

Every control-plane process runs one Deliverer. A deliverer *claims* due rows with one
conditional UPDATE (`… WHERE lease_until_ms <= now`) that stamps its own lease token and a
lease deadline; under PostgreSQL's row locks the second of two racing UPDATEs re-reads the
row, finds the lease taken and skips it, so two replicas never deliver one row at the same
moment. The outcome is written back only under the same token. A deliverer that dies
mid-POST leaves its lease to expire, and the row is tried again: delivery is at least once,
and the receiver deduplicates by `webhook-id`, which is the event's stable id.

Signing is Standard Webhooks' (https://www.standardwebhooks.com): `webhook-signature:
v1,<base64 HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}">`, keyed by the base64
part of the endpoint's `whsec_` secret. The body is stored once, so every attempt sends the
same bytes; the timestamp is the attempt's."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from sqlalchemy import Engine, select

from controlplane import egress
from controlplane.records import Clock
from controlplane.store.schema import webhook_endpoints, webhook_outbox
from controlplane.webhooks import SECRET_PREFIX

log = logging.getLogger(__name__)

USER_AGENT = "spendgate-webhooks/1"
MAX_ERROR = 500


@dataclass(frozen=True)
class Policy:
    retry_base_ms: int = 5_000  # the first retry's delay; each next one doubles it
    max_delay_ms: int = 6 * 3600 * 1000
    # 25 attempts: the 24 delays of the default schedule add up to about 3.2 days.
    max_attempts: int = 25
    lease_ms: int = 60_000  # longer than a POST can take (timeout_seconds)
    timeout_seconds: float = 10.0
    poll_seconds: float = 0.5
    allow_private: bool = False  # deliver to loopback / private / link-local addresses (egress.py)
    batch: int = 32
    concurrency: int = 8

    def backoff_ms(self, failures: int) -> int:
        """The delay after the `failures`-th failed attempt."""
        doubled: int = self.retry_base_ms << min(max(failures - 1, 0), 40)
        return min(doubled, self.max_delay_ms)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


class Poster(Protocol):
    """POSTs a body; returns the HTTP status or raises httpx.HTTPError."""

    def __call__(self, url: str, headers: dict[str, str], body: bytes) -> int: ...


def httpx_poster(timeout_seconds: float, allow_private: bool) -> tuple[Poster, Callable[[], None]]:
    """POSTs to the address egress.py checked (no redirects: a 3xx is a failed attempt)."""
    client = httpx.Client(timeout=timeout_seconds, follow_redirects=False)

    def post(url: str, headers: dict[str, str], body: bytes) -> int:
        targets, host, extensions = egress.pinned(url, allow_private)
        for i, target in enumerate(targets):  # each address the name has, until one connects
            request = client.build_request(
                "POST", target, headers={**headers, **host}, content=body, extensions=extensions
            )
            try:
                with contextlib.closing(client.send(request, stream=True)) as response:
                    return response.status_code  # the answer's body is never read
            except httpx.ConnectError:
                if i == len(targets) - 1:
                    raise
        raise httpx.ConnectError(f"{url}: no address to connect to")

    return post, client.close


@dataclass(frozen=True)
class _Claimed:
    seq: int
    event_id: str
    body: str
    attempts: int
    url: str | None
    secret: str | None
    token: str


class Deliverer:
    def __init__(self, engine: Engine, clock: Clock, policy: Policy, poster: Poster | None = None) -> None:
        self._engine = engine
        self._clock = clock
        self.policy = policy
        self._close: Callable[[], None] = lambda: None
        if poster is None:
            poster, self._close = httpx_poster(policy.timeout_seconds, policy.allow_private)
        self._post = poster
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-deliverer", daemon=True)
        self._pool = ThreadPoolExecutor(max_workers=policy.concurrency, thread_name_prefix="webhook")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.policy.timeout_seconds + 5)
        self._pool.shutdown(wait=True)
        self._close()

    def _run(self) -> None:
        busy = False
        while not self._stopping.wait(0 if busy else self.policy.poll_seconds):
            try:
                busy = self.run_once() == self.policy.batch
            except Exception:  # keep delivering after a database hiccup
                log.exception("webhook delivery round failed; retrying")
                busy = False

    def run_once(self) -> int:
        """Claim the due rows and deliver them; returns how many were claimed."""
        claimed = self.claim()
        list(self._pool.map(self.deliver, claimed))
        return len(claimed)

    def claim(self) -> list[_Claimed]:
        now = self._clock()
        token = uuid.uuid4().hex
        due = (
            select(webhook_outbox.c.seq)
            .where(
                webhook_outbox.c.status == "pending",
                webhook_outbox.c.next_attempt_ms <= now,
                webhook_outbox.c.lease_until_ms <= now,
            )
            .order_by(webhook_outbox.c.next_attempt_ms)
            .limit(self.policy.batch)
        )
        with self._engine.begin() as conn:
            taken = conn.execute(
                webhook_outbox.update()
                .where(
                    webhook_outbox.c.seq.in_(due.scalar_subquery()),
                    webhook_outbox.c.status == "pending",
                    webhook_outbox.c.lease_until_ms <= now,
                )
                .values(lease_token=token, lease_until_ms=now + self.policy.lease_ms)
            )
            if taken.rowcount == 0:
                return []
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(
                    webhook_outbox.c.seq,
                    webhook_outbox.c.event_id,
                    webhook_outbox.c.body,
                    webhook_outbox.c.attempts,
                    webhook_endpoints.c.url,
                    webhook_endpoints.c.secret,
                )
                .select_from(
                    webhook_outbox.outerjoin(
                        webhook_endpoints, webhook_endpoints.c.account_id == webhook_outbox.c.account_id
                    )
                )
                .where(webhook_outbox.c.lease_token == token)
                .order_by(webhook_outbox.c.seq)
            ).all()
        return [_Claimed(*row, token=token) for row in rows]

    def deliver(self, row: _Claimed) -> bool:
        """One attempt; records its outcome (under the row's lease) and returns success."""
        if row.url is None or row.secret is None:
            self._finish(row, status="dead", error="no webhook endpoint is configured", code=0)
            return False
        timestamp = self._clock() // 1000
        body = row.body.encode()
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": row.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(row.secret, row.event_id, timestamp, body),
        }
        code = 0
        try:
            code = self._post(row.url, headers, body)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            if 200 <= code < 300:
                self._finish(row, status="delivered", error="", code=code)
                return True
            error = f"HTTP {code}"
        failures = row.attempts + 1
        dead = failures >= self.policy.max_attempts
        log.warning(
            "webhook %s to %s failed (attempt %d): %s%s",
            row.event_id,
            row.url,
            failures,
            error,
            "; giving up" if dead else "",
        )
        self._finish(row, status="dead" if dead else "pending", error=error, code=code)
        return False

    def _finish(self, row: _Claimed, status: str, error: str, code: int) -> None:
        now = self._clock()
        values: dict[str, Any] = {
            "status": status,
            "attempts": webhook_outbox.c.attempts + 1,
            "last_error": error[:MAX_ERROR],
            "last_status_code": code,
            "lease_until_ms": 0,
            "lease_token": "",
        }
        if status == "delivered":
            values["delivered_ms"] = now
        elif status == "pending":
            values["next_attempt_ms"] = now + self.policy.backoff_ms(row.attempts + 1)
        with self._engine.begin() as conn:
            conn.execute(
                webhook_outbox.update()
                .where(webhook_outbox.c.seq == row.seq, webhook_outbox.c.lease_token == row.token)
                .values(**values)
            )

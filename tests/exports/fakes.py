"""Local stand-ins for Stripe, Lago and OpenMeter on loopback: each speaks the sink's
HTTP API closely enough for its official client, checks the idempotency field the
way the service uses it, and keeps each event once (as the real service would).

`received` is every event id in arrival order (duplicates included); `stored` the
deduplicated events. `fail_next(n)` answers the next n requests with a 500;
`hold()` makes the next request that carries events store them and then not answer
until `release()` (a sink that took a batch whose acknowledgement never arrives)."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "sk_test_fake"


class FakeSink:
    kind = ""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[str] = []
        self.stored: dict[str, dict[str, Any]] = {}
        self.attempts: list[float] = []  # monotonic time of every request
        self.refusals: list[str] = []  # what the fake refused as invalid (400 / 422)
        self._fail = 0
        self._fail_status = 500
        self._hold: threading.Event | None = None
        self.holding = threading.Event()  # set once a held request has stored its events
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status, headers, payload = fake.handle(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client was killed while we held the answer
                    pass

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail_next(self, n: int, status: int = 500) -> None:
        with self.lock:
            self._fail, self._fail_status = n, status

    def hold(self) -> threading.Event:
        self._hold = threading.Event()
        return self._hold

    def release(self) -> None:
        if self._hold is not None:
            self._hold.set()

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.attempts.append(time.monotonic())
            if self._fail:
                self._fail -= 1
                return self.failure(self._fail_status)
            if headers.get("authorization") != f"Bearer {API_KEY}":
                return self.error(401, "bad api key")
            answer = self.take(path, headers, body)
            hold, self._hold = self._hold, None
        if hold is not None and answer[0] < 300:
            self.holding.set()
            hold.wait(30)
        return answer

    def take(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError

    def failure(self, status: int) -> tuple[int, dict[str, str], bytes]:
        return self.error(status, "internal error (injected)")

    def error(self, status: int, message: str) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError

    def refuse(self, status: int, message: str) -> tuple[int, dict[str, str], bytes]:
        self.refusals.append(message)
        return self.error(status, message)

    def ids(self) -> list[str]:
        return sorted(self.stored)


def _json(status: int, doc: Any, content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
    return status, {"content-type": content_type}, json.dumps(doc).encode()


class FakeStripe(FakeSink):
    """POST /v1/billing/meter_events, form-encoded. Dedupes on `identifier`; replays the
    first answer for a repeated Idempotency-Key (and refuses one reused with other params)."""

    kind = "stripe"

    def __init__(self) -> None:
        super().__init__()
        self.idempotent: dict[str, tuple[dict[str, str], tuple[int, dict[str, str], bytes]]] = {}

    def error(self, status: int, message: str) -> tuple[int, dict[str, str], bytes]:
        kind = "api_error" if status >= 500 else "invalid_request_error"
        return _json(status, {"error": {"type": kind, "message": message}})

    def take(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        if path != "/v1/billing/meter_events":
            return self.refuse(404, f"no route {path}")
        params = dict(urllib.parse.parse_qsl(body.decode(), strict_parsing=True))
        key = headers.get("idempotency-key", "")
        if key in self.idempotent:
            first, answer = self.idempotent[key]
            if first != params:
                return self.refuse(
                    400, "Keys for idempotent requests can only be used with the same parameters"
                )
            self.received.append(params.get("identifier", ""))
            return answer
        identifier = params.get("identifier", "")
        if not identifier or len(identifier) > 100:
            return self.refuse(400, "identifier: required here (the exporter's idempotency key), at most 100")
        customer, value = params.get("payload[stripe_customer_id]"), params.get("payload[value]", "")
        if not customer or not value.lstrip("-").isdigit():
            return self.refuse(400, f"payload needs stripe_customer_id and a whole-number value: {params}")
        timestamp = int(params.get("timestamp", "0"))
        if not time.time() - 35 * 86400 <= timestamp <= time.time() + 300:
            return self.refuse(400, "timestamp must be within the past 35 days")
        self.received.append(identifier)
        self.stored.setdefault(identifier, params)
        answer = _json(
            200,
            {
                "object": "billing.meter_event",
                "created": int(time.time()),
                "event_name": params.get("event_name", ""),
                "identifier": identifier,
                "livemode": False,
                "payload": {"stripe_customer_id": customer, "value": value},
                "timestamp": timestamp,
            },
        )
        if key:
            self.idempotent[key] = (params, answer)
        return answer


class FakeLago(FakeSink):
    """POST /api/v1/events/batch. A batch naming a stored transaction_id is refused whole
    (422, value_already_exist at those indexes), as Lago does; duplicates inside one
    payload are kept once."""

    kind = "lago"

    def error(self, status: int, message: str) -> tuple[int, dict[str, str], bytes]:
        return _json(status, {"status": status, "error": message, "code": "error"})

    def take(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        if path != "/api/v1/events/batch":
            return self.refuse(404, f"no route {path}")
        events = json.loads(body)["events"]
        if not 1 <= len(events) <= 100:
            return self.refuse(422, "between 1 and 100 events")
        details: dict[str, Any] = {}
        for i, e in enumerate(events):
            missing = [f for f in ("transaction_id", "external_subscription_id", "code") if not e.get(f)]
            if missing:
                details[str(i)] = {f: ["value_is_mandatory"] for f in missing}
            elif e["transaction_id"] in self.stored:
                details[str(i)] = {"transaction_id": ["value_already_exist"]}
        for e in events:
            self.received.append(str(e.get("transaction_id", "")))
        if details:
            if any(d != {"transaction_id": ["value_already_exist"]} for d in details.values()):
                self.refusals.append(json.dumps(details))
            return _json(
                422,
                {
                    "status": 422,
                    "error": "Unprocessable Entity",
                    "code": "validation_errors",
                    "error_details": details,
                },
            )
        for e in events:
            self.stored.setdefault(e["transaction_id"], e)
        return _json(200, {"events": events})


class FakeOpenMeter(FakeSink):
    """POST /api/v1/events, a CloudEvents batch. Dedupes on (source, id), answers 204."""

    kind = "openmeter"

    def error(self, status: int, message: str) -> tuple[int, dict[str, str], bytes]:
        doc = {"type": "about:blank", "title": "error", "status": status, "detail": message}
        return _json(status, doc, "application/problem+json")

    def take(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        if path != "/api/v1/events":
            return self.refuse(404, f"no route {path}")
        if headers.get("content-type") != "application/cloudevents-batch+json":
            return self.refuse(400, f"content-type {headers.get('content-type')}")
        events = json.loads(body)
        for e in events:
            missing = [f for f in ("id", "source", "type", "subject", "time") if not e.get(f)]
            if missing or e.get("specversion") != "1.0":
                return self.refuse(400, f"not a CloudEvent: {missing} {e}")
        for e in events:
            self.received.append(e["id"])
            self.stored.setdefault(e["id"], e)  # one source per test: (source, id) is id
        return 204, {}, b""


FAKES: dict[str, type[FakeSink]] = {"stripe": FakeStripe, "lago": FakeLago, "openmeter": FakeOpenMeter}


@contextmanager
def running(kind: str) -> Iterator[FakeSink]:
    fake = FAKES[kind]()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.release()
        fake.server.shutdown()
        fake.server.server_close()


def sink_options(kind: str, url: str) -> dict[str, str | int | float]:
    """What a user writes in [exports.NAME] to point the sink at the fake."""
    options: dict[str, str | int | float] = {"kind": kind, "api_key": API_KEY, "base_url": url}
    if kind == "stripe":
        options["event_name"] = "ai_usage"
    elif kind == "lago":
        options |= {
            "code": "ai_usage",
            "subscription": "{metadata.lago_subscription_id}",
            "amount": "cost_micros",
        }
    else:
        options |= {"type": "ai.usage", "subject": "{metadata.customer}"}
    return options

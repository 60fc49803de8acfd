"""Every request gets an id of the gateway's own: the lease, the usage event and the
log lines carry it, and the client gets it back in `x-spendgate-request-id` (the
provider's own `x-request-id`, if any, passes through untouched). It is never taken
from the client: a chosen id could collide with another request's settlement."""

from __future__ import annotations

import contextvars
import logging
import os

from starlette.types import Scope

HEADER = b"x-spendgate-request-id"
SCOPE_KEY = "spendgate.request_id"

# What proxy.py learns of the request on the way, left in its scope for its metrics
# (metrics.py) and access line (logs.py) at its end.
ROUTED = "spendgate.routed"  # (provider, model, key id), once the model was resolved
REFUSAL = "spendgate.refusal"  # the ledger's reason for refusing the reservation (key_cap, wallet, ...)
UPSTREAM_SECONDS = "spendgate.upstream_seconds"  # the upstream's time to response headers

current: contextvars.ContextVar[str] = contextvars.ContextVar("spendgate_request_id", default="-")


def of(scope: Scope) -> str:
    """The scope's request id (one is made for a scope the middleware did not see)."""
    rid = scope.get(SCOPE_KEY)
    if not isinstance(rid, str):
        rid = scope[SCOPE_KEY] = os.urandom(16).hex()  # uuid4().hex's shape, a quarter of its cost
    return rid


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (for a format's `%(request_id)s`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current.get()
        return True

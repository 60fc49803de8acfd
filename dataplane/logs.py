"""Log lines: text for a terminal, or one JSON object a line for a log shipper
(`--log-format json` or SPENDGATE_LOG_FORMAT=json), and the per-request access line.

A JSON line has `ts` (UTC, ISO 8601, milliseconds), `level`, `logger`, `message`,
`request_id` while a request is being handled (the id its client got back in
`x-spendgate-request-id`), `exception` for a traceback, and whatever a call passed
in `extra=`. The access line (logger `spendgate.access`, `--access-log` or
SPENDGATE_ACCESS_LOG=on; off by default: docs/observability.md) adds method,
path, route, status, latency_ms and, once the request's model was resolved,
key_id, provider, model and upstream_ms. No line carries a secret: the access
line names the key by its id, the path never includes the query string (where
Google's SDK may put `?key=`), and headers are never logged.

The standard library's logging with a formatter of its own: a JSON logging
library would add a dependency for these forty lines."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.types import Scope

from dataplane import requestid
from dataplane.requestid import ROUTED, UPSTREAM_SECONDS

FORMATS = ("text", "json")
ACCESS = logging.getLogger("spendgate.access")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"

# A record's own attributes; any other came in `extra=` and becomes a field of the JSON line.
_RECORD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", "-")
        if rid != "-":
            line["request_id"] = rid
        for name, value in record.__dict__.items():
            if name not in _RECORD:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def log_format(env: Mapping[str, str]) -> str:
    value = env.get("SPENDGATE_LOG_FORMAT", "text").lower() or "text"
    if value not in FORMATS:
        raise ValueError(f"SPENDGATE_LOG_FORMAT must be text or json, not {value!r}")
    return value


def access_log(env: Mapping[str, str]) -> bool:
    return env.get("SPENDGATE_ACCESS_LOG", "off").lower() in ("1", "on", "true", "yes")


def configure(fmt: str, level: int, access: bool = False, text_format: str = TEXT_FORMAT) -> None:
    """The process's handler, on the root logger (stderr), unless it has one already (as
    `logging.basicConfig`: a host that configured logging, or pytest, keeps its own)."""
    ACCESS.setLevel(logging.INFO if access else logging.WARNING)
    # Hypercorn is handed this logger (serve.py), so its lines come out in the same format.
    logging.getLogger("hypercorn.error").setLevel(max(level, logging.WARNING))
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.addFilter(requestid.RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text_format))
    root.addHandler(handler)
    root.setLevel(level)


def access(scope: Scope, status: int, seconds: float) -> None:
    """The request's access line (the caller checked ACCESS.isEnabledFor(INFO))."""
    route = scope.get("route")
    fields: dict[str, Any] = {
        "method": scope["method"],
        "path": scope["path"],
        "route": route.path if route is not None else None,
        "status": status,
        "latency_ms": round(seconds * 1000, 1),
    }
    text = ""
    routed = scope.get(ROUTED)
    if routed is not None:
        fields["provider"], fields["model"], fields["key_id"] = routed
        text = f" {routed[2]} {routed[0]}/{routed[1]}"
    upstream = scope.get(UPSTREAM_SECONDS)
    if upstream is not None:
        fields["upstream_ms"] = round(upstream * 1000, 1)
    ACCESS.info(
        "%s %s %d %.1fms%s",
        fields["method"],
        fields["path"],
        status,
        fields["latency_ms"],
        text,
        extra=fields,
    )

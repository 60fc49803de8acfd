"""Exports of usage events to billing systems (Stripe meter events, Lago events,
OpenMeter CloudEvents), each through its official client, behind one small
Protocol (`Sink`).

The invariant, per sink: every usage event reaches the sink at least once, and
the sink counts it at most once.

- **A cursor per sink** (`export_cursors.position`, in the control plane's own
  database) says "every event with `seq <= position` has been acknowledged".
  It moves only after the sink acknowledged a batch, in a conditional UPDATE
  (`WHERE position = <what we read>` and we hold the sink's lease), so it never
  goes back and never skips ahead of an acknowledgement.
- **The sink's idempotency key closes the at-least-once window.** A process
  that dies after the sink took a batch but before the cursor moved sends the
  batch again on restart; each event carries our `request_id` (the usage
  event's id) as the sink's deduplication key — Stripe's `identifier` (and the
  request's `Idempotency-Key`), Lago's `transaction_id`, the CloudEvent `id` —
  so the sink keeps one copy.
- **A stable total order.** `usage_events.seq` is an autoincrement primary key.
  On SQLite every write transaction holds the database's write lock from
  BEGIN IMMEDIATE to COMMIT and the rowid is taken under it, so events commit
  in seq order: the largest committed seq is a safe high-water mark. On
  PostgreSQL seq comes from a sequence: two settlements running at once can
  commit out of order (seq 41 still in flight while 42 is visible), and a
  cursor moved to 42 would skip 41 for good. So the exporter only reads up to
  a high-water mark it saw at least `lag_seconds` ago (default 10 s on
  PostgreSQL, 0 on SQLite; `Watermark`): every seq at or below it was handed
  out at least that long ago, so its transaction — a settlement, which takes
  milliseconds — has committed or rolled back. The alternative, a
  commit-ordered sequence (a table lock, or PostgreSQL's transaction ids),
  would put a lock or engine-specific SQL on the settle path; a few seconds of
  export delay costs nothing for billing. A settlement transaction that stays
  open longer than the lag is the case this cannot see: raise the lag if
  yours can.
- **One exporter per sink at a time**: a lease on the cursor row
  (`owner`, `lease_until_ms`), so several control planes over one PostgreSQL
  database do not send the same batches side by side.

A failed delivery (the sink down, a 5xx, a key without the customer mapping)
is retried with exponential backoff; the cursor waits, nothing is skipped."""

from controlplane.exports.config import ExportConfigError, SinkConfig, load_sinks, runner_for
from controlplane.exports.cursors import Cursors, CursorStatus
from controlplane.exports.runner import ExportRunner, SinkExporter
from controlplane.exports.sink import DeliveryFailed, ExportEvent, Sink

__all__ = [
    "CursorStatus",
    "ExportConfigError",
    "Cursors",
    "DeliveryFailed",
    "ExportEvent",
    "ExportRunner",
    "Sink",
    "SinkConfig",
    "SinkExporter",
    "load_sinks",
    "runner_for",
]

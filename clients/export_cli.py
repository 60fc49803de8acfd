"""`spendgate export status|run`: the billing-system exports (controlplane/exports), read
and driven straight from the control plane's database, so they work whether or not a
control plane is running.

    spendgate export status [--data-dir DIR | --db URL] [--json]
    spendgate export run [--once] [--sink NAME] [--data-dir DIR | --db URL]

Sinks are configured as for the control plane: `[exports.NAME]` tables in the TOML file
named by SPENDGATE_CONFIG, and SPENDGATE_EXPORTS / SPENDGATE_EXPORT_<NAME>_<OPTION>."""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from controlplane.exports import SinkExporter

# SQLAlchemy and the exporters take a third of a second to import: the commands here import
# them as they run, and every other `spendgate` command starts without them.

Emit = Callable[[argparse.Namespace, Any, "list[list[str]] | None"], None]


__all__ = ["ExportUsageError", "register"]


class ExportUsageError(Exception):
    """A mistake in the command line or the sinks' configuration."""


def _engine(args: argparse.Namespace) -> Engine:
    from controlplane.store import db

    if args.db:
        return db.make_engine(args.db)
    data_dir = Path(args.data_dir)
    if not (data_dir / "spendgate.db").exists():
        raise ExportUsageError(f"no database in {data_dir} (give --data-dir or --db)")
    return db.make_engine(db.sqlite_url(data_dir))


def _when(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_status(args: argparse.Namespace, emit: Emit) -> int:
    from sqlalchemy.exc import DBAPIError

    from controlplane.exports import Cursors, ExportConfigError, load_sinks

    try:
        configured = {s.name: s.kind for s in load_sinks(os.environ)}
    except ExportConfigError as exc:
        raise ExportUsageError(str(exc)) from None
    engine = _engine(args)
    try:
        rows = Cursors(engine).status()
    except DBAPIError as exc:
        raise ExportUsageError(
            f"cannot read the export cursors ({exc.orig}); has a control plane run here?"
        ) from None
    finally:
        engine.dispose()
    data = [{**asdict(r), "configured": r.sink in configured} for r in rows]
    seen = {r.sink for r in rows}
    data += [
        {"sink": name, "kind": kind, "configured": True, "started": False}
        for name, kind in configured.items()
        if name not in seen
    ]
    table = [["SINK", "KIND", "POSITION", "BEHIND", "EXPORTED", "LAST SUCCESS", "FAILURES", "LAST ERROR"]]
    for d in data:
        if d.get("started") is False:
            table.append([d["sink"], d["kind"], "-", "-", "-", "not started", "-", ""])
            continue
        table.append(
            [
                d["sink"] + ("" if d["configured"] else " (not configured)"),
                d["kind"],
                str(d["position"]),
                str(d["behind"]),
                str(d["exported"]),
                _when(d["last_success_ms"]),
                str(d["failures"]),
                d["last_error"].splitlines()[0][:120] if d["last_error"] else "",
            ]
        )
    emit(
        args,
        {"sinks": data},
        table if data else [["no export sinks: configure [exports.NAME] (docs/exports.md)"]],
    )
    return 0


def cmd_run(args: argparse.Namespace, emit: Emit) -> int:
    from controlplane.exports import Cursors, ExportConfigError, SinkExporter, load_sinks
    from controlplane.exports.runner import Step
    from controlplane.store import db

    try:
        sinks = [s for s in load_sinks(os.environ) if not args.sink or s.name in args.sink]
        if not sinks:
            raise ExportUsageError(
                "no export sinks configured" + (f" named {', '.join(args.sink)}" if args.sink else "")
            )
        engine = _engine(args)
        db.migrate(engine)
        cursors = Cursors(engine)
        postgres = db.is_postgres(engine)
        exporters = [SinkExporter(s.name, s.build(os.environ), cursors, s.policy(postgres)) for s in sinks]
    except ExportConfigError as exc:
        raise ExportUsageError(str(exc)) from None
    try:
        if not args.once:
            return _forever(exporters)
        lag = max(e.policy.lag_seconds for e in exporters)
        if lag:  # the high-water mark needs one sighting that old (see controlplane/exports)
            for e in exporters:
                e.watermark.observe(cursors.max_seq())
            time.sleep(lag)
        results = {e.name: e.run_until_caught_up() for e in exporters}
        for e in exporters:
            cursors.release(e.name, e.owner)
        outcome = {name: step.value for name, step in results.items()}
        status = {r.sink: r for r in cursors.status(list(results))}
        table = [["SINK", "RESULT", "POSITION", "BEHIND", "LAST ERROR"]]
        for name, step in results.items():
            r = status[name]
            result = {
                Step.IDLE: "caught up",
                Step.FAILED: "failed",
                Step.NOT_OURS: "lease held elsewhere",
            }.get(step, step.value)
            table.append(
                [
                    name,
                    result,
                    str(r.position),
                    str(r.behind),
                    r.last_error.splitlines()[0][:120] if r.last_error else "",
                ]
            )
        emit(args, {"results": outcome}, table)
        return 0 if all(step is Step.IDLE for step in results.values()) else 1
    finally:
        engine.dispose()


def _forever(exporters: list[SinkExporter]) -> int:
    from controlplane.exports import ExportRunner

    runner = ExportRunner(exporters)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    runner.start()
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
    return 0


def register(
    sub: Any,
    json_flag: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
    emit: Emit,
    data_dir: str,
) -> None:
    group = sub.add_parser(
        "export", help="exports of usage events to billing systems (Stripe, Lago, OpenMeter)"
    ).add_subparsers(dest="export_command", required=True)

    def where(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--data-dir",
            default=os.environ.get("SPENDGATE_DATA_DIR", data_dir),
            help="the control plane's data dir, for its SQLite database (default: $SPENDGATE_DATA_DIR, else %(default)s)",
        )
        p.add_argument(
            "--db",
            default=os.environ.get("SPENDGATE_DB_URL"),
            help="the database URL instead (postgresql://…; default: $SPENDGATE_DB_URL)",
        )
        return json_flag(p)

    status = where(
        group.add_parser("status", help="per sink: cursor position, events behind, last success, last error")
    )
    status.set_defaults(func=lambda args: cmd_status(args, emit))
    run = where(
        group.add_parser(
            "run", help="export now, from this process (the control plane also does, in the background)"
        )
    )
    run.add_argument(
        "--once",
        action="store_true",
        help="stop once every sink is caught up, or at its first failure (exit 1)",
    )
    run.add_argument(
        "--sink", action="append", default=[], help="only this sink (repeat); default: every configured sink"
    )
    run.set_defaults(func=lambda args: cmd_run(args, emit))

"""The `spendgate` command.

    spendgate controlplane --db URL --grpc-port G [--catalog FILE]
    spendgate accounts create NAME --credit-usd X [--json]      (admin token)
    spendgate keys mint|list|get|update|rotate|revoke …         (SPENDGATE_MASTER_KEY)
    spendgate usage --from DATE --to DATE [--group-by metadata.K] (SPENDGATE_MASTER_KEY)
    spendgate settlements list|replay [--spool-dir DIR]          (service token)
    spendgate catalog list|show|diff|apply                       (admin token or master key)
    spendgate export status|run [--once]                         (the database: --data-dir / --db)

Environment: SPENDGATE_CONTROLPLANE (host:port, default 127.0.0.1:50051),
SPENDGATE_ADMIN_TOKEN (else read from $SPENDGATE_DATA_DIR/admin-token),
SPENDGATE_MASTER_KEY."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clients import catalog_cli, export_cli
from clients.client import PERIODS, SCOPES, ControlPlaneClient, SpendgateRpcError
from dataplane import logs
from dataplane.settlement import refusal_from_pb
from dataplane.spool import DeadLetter, DeadLetters
from fakeupstream import server as mock_upstream
from spendgate import shapes
from spendgate.contract import format_usd, parse_usd
from spendgate.times import iso_utc
from spendgate.v1 import keys_pb2, usage_pb2

if TYPE_CHECKING:
    from controlplane.server import Config, ControlPlane

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_DATA_DIR = "./spendgate-data"


class UsageError(Exception):
    """A mistake on the command line or in the environment."""


def _usd(text: str) -> int:
    try:
        return parse_usd(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole(text: str) -> int:
    """An integer option that fits its protobuf field, even in milliseconds (the control
    plane checks its range): one that does not is a usage error, not a traceback."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if abs(value) > (2**63 - 1) // 1000:
        raise argparse.ArgumentTypeError(f"out of range: {text}")
    return value


def _time_ms(text: str) -> int:
    """Epoch milliseconds, or an ISO date/datetime (UTC unless it says otherwise)."""
    if text.isdigit():
        return _whole(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not epoch ms or an ISO date: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _target() -> str:
    return os.environ.get("SPENDGATE_CONTROLPLANE", DEFAULT_TARGET)


def _token_client(variable: str, file_name: str) -> ControlPlaneClient:
    """A client with the token in `variable`, else in the data dir's `file_name`."""
    token = os.environ.get(variable, "")
    if not token:
        path = Path(os.environ.get("SPENDGATE_DATA_DIR", DEFAULT_DATA_DIR)) / file_name
        if not path.exists():
            raise UsageError(
                f"set {variable} (or SPENDGATE_DATA_DIR to a data dir holding {file_name}; {path} does not exist)"
            )
        token = path.read_text().strip()
    return ControlPlaneClient(_target(), token)


def _admin_client() -> ControlPlaneClient:
    return _token_client("SPENDGATE_ADMIN_TOKEN", "admin-token")


def _master_client() -> ControlPlaneClient:
    token = os.environ.get("SPENDGATE_MASTER_KEY", "")
    if not token:
        raise UsageError("set SPENDGATE_MASTER_KEY to your account's master key")
    return ControlPlaneClient(_target(), token)


def _emit(args: argparse.Namespace, data: Any, table: list[list[str]] | None = None) -> None:
    if args.json or table is None:
        print(json.dumps(data, indent=2))
        return
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _state(key: dict[str, Any]) -> str:
    if key["revoked"]:
        return "revoked"
    return "expired" if key["expired"] else "active"


def _money(micros: int | None) -> str:
    return "-" if micros is None else "$" + format_usd(micros)


def _limits(key: dict[str, Any]) -> str:
    """`60rpm 10000tpm 4par`, or `-` for a key without rate limits."""
    parts = [
        f"{key[field]}{unit}"
        for field, unit in (("rpm_limit", "rpm"), ("tpm_limit", "tpm"), ("max_parallel_requests", "par"))
        if key[field] is not None
    ]
    return " ".join(parts) or "-"


def _rate_limits(args: argparse.Namespace) -> keys_pb2.RateLimits:
    return keys_pb2.RateLimits(
        rpm_limit=args.rpm, tpm_limit=args.tpm, max_parallel_requests=args.max_parallel
    )


def _key_table(keys: Sequence[Any]) -> list[list[str]]:
    rows = [["ID", "NAME", "SCOPE", "CAP", "PERIOD", "SPENT", "RESERVED", "REMAINING", "LIMITS", "STATE"]]
    for k in keys:
        j = shapes.key_json(k)
        rows.append(
            [
                j["id"],
                j["name"],
                j["scope"],
                _money(j["max_spend_micros"]),
                j["cap_period"],
                _money(j["spent_micros"]),
                _money(j["reserved_micros"]),
                _money(j["remaining_micros"]),
                _limits(j),
                _state(j),
            ]
        )
    return rows


# commands -------------------------------------------------------------------


def _control_plane(config: Config) -> ControlPlane:
    """A wrong export-sink setting, found as the control plane is made, is one clear line."""
    from controlplane.exports import ExportConfigError
    from controlplane.server import ControlPlane

    try:
        return ControlPlane(config)
    except ExportConfigError as exc:
        raise UsageError(str(exc)) from None


def cmd_controlplane(args: argparse.Namespace) -> int:
    from controlplane.server import Config

    config = Config(
        data_dir=Path(args.data_dir),
        db_url=args.db or "",
        host=args.host,
        grpc_port=args.grpc_port,
        catalog_file=Path(args.catalog) if args.catalog else None,
        fee_bps=args.fee_bps,
        metrics_port=args.metrics_port,
    )
    plane = _control_plane(config)
    plane.start()
    print(f"spendgate control plane: gRPC on {plane.address}{_metrics_url(plane)}", flush=True)
    if not config.admin_token:
        print(f"admin token: {plane.admin_token_file}", flush=True)
    print(
        f"next: export SPENDGATE_CONTROLPLANE={plane.address} SPENDGATE_DATA_DIR={config.data_dir}; "
        "spendgate accounts create my-app --credit-usd 20 --json",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: plane.stop())
    try:
        plane.wait()
    except KeyboardInterrupt:
        plane.stop()
    return 0


def cmd_dataplane(args: argparse.Namespace) -> int:
    from dataplane.serve import serve

    if not args.spool_dir:
        raise UsageError(
            "a standalone data plane needs --spool-dir DIR (or SPENDGATE_SPOOL_DIR): where its "
            "settlements wait, on disk, while the control plane is out of reach"
        )
    env = {
        "SPENDGATE_CONTROLPLANE": args.controlplane,
        "SPENDGATE_SPOOL_DIR": args.spool_dir,
        **_workers_env(args),
    }
    _check_http_port(args.host, args.http_port)
    print(f"spendgate data plane: http://{args.host}:{args.http_port} ({args.workers} worker(s))", flush=True)
    return serve(args.host, args.http_port, args.workers, env)


def cmd_up(args: argparse.Namespace) -> int:
    from controlplane.server import Config
    from dataplane.serve import serve

    data_dir = Path(args.data_dir)
    _check_http_port(args.host, args.http_port)
    plane = _control_plane(
        Config(
            data_dir=data_dir,
            db_url=args.db or "",
            host=args.host,
            grpc_port=args.grpc_port,
            catalog_file=Path(args.catalog) if args.catalog else None,
            fee_bps=args.fee_bps,
            metrics_port=args.metrics_port,
        )
    )
    plane.start()
    base = f"http://{args.host}:{args.http_port}"
    print(
        f"spendgate is up: HTTP {base} ({args.workers} worker(s)), gRPC {plane.address}{_metrics_url(plane)}",
        flush=True,
    )
    if not plane.config.admin_token:
        print(f"admin token: {plane.admin_token_file}", flush=True)
    if not _has_accounts(plane):  # the first start: say how to make one, runnable as printed
        print(
            f"next: export SPENDGATE_CONTROLPLANE={plane.address} SPENDGATE_DATA_DIR={data_dir.resolve()}; "
            f"{_this_command()} accounts create my-app --credit-usd 20 --json",
            flush=True,
        )
    env = {
        "SPENDGATE_CONTROLPLANE": plane.address,
        "SPENDGATE_SERVICE_TOKEN": plane.tokens.service,
        "SPENDGATE_SPOOL_DIR": str(data_dir / "spool"),
        **_workers_env(args),
    }
    try:
        return serve(args.host, args.http_port, args.workers, env)
    finally:
        plane.stop()
        print("spendgate stopped", flush=True)


def _workers_env(args: argparse.Namespace) -> dict[str, str]:
    """What the data-plane workers are told of logging and metrics (logs.py, serve.py)."""
    return {
        "SPENDGATE_LOG_FORMAT": args.log_format,
        "SPENDGATE_ACCESS_LOG": "on" if args.access_log else "off",
        "PROMETHEUS_MULTIPROC_DIR": args.metrics_dir,
    }


def _metrics_url(plane: Any) -> str:
    if plane.metrics_port is None:
        return ""
    return f", metrics http://{plane.config.host}:{plane.metrics_port}/metrics"


def _has_accounts(plane: Any) -> bool:
    from sqlalchemy import select

    from controlplane.store.schema import accounts

    with plane.engine.connect() as conn:
        return conn.execute(select(accounts.c.id).limit(1)).first() is not None


def _this_command() -> str:
    """`spendgate` if that is on PATH and is this installation, else its full path."""
    this = Path(sys.argv[0]).resolve()
    found = shutil.which("spendgate")
    return "spendgate" if found is not None and Path(found).resolve() == this else str(this)


def _spool_dir(args: argparse.Namespace) -> Path:
    if args.spool_dir:
        return Path(args.spool_dir)
    if os.environ.get("SPENDGATE_SPOOL_DIR"):
        return Path(os.environ["SPENDGATE_SPOOL_DIR"])
    # where `spendgate up` keeps it
    return Path(os.environ.get("SPENDGATE_DATA_DIR", DEFAULT_DATA_DIR)) / "spool"


def _service_client() -> ControlPlaneClient:
    return _token_client("SPENDGATE_SERVICE_TOKEN", "service-token")


def _letter_json(letter: DeadLetter) -> dict[str, Any]:
    s = letter.settlement
    return {
        "request_id": s.request_id,
        "key_id": s.key_id,
        "provider": s.provider,
        "model": s.model,
        "refusal": letter.refusal.value,
        "error": letter.error,
        "refused_at": datetime.fromtimestamp(letter.refused_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "started_ms": s.started_ms,
    }


def _letters_table(letters: Sequence[DeadLetter]) -> list[list[str]]:
    rows = [["REQUEST", "KEY", "MODEL", "REFUSAL", "REFUSED AT", "ERROR"]]
    for letter in letters:
        j = _letter_json(letter)
        rows.append(
            [
                j["request_id"],
                j["key_id"],
                f"{j['provider']}/{j['model']}",
                j["refusal"],
                j["refused_at"],
                j["error"],
            ]
        )
    return rows


def cmd_settlements_list(args: argparse.Namespace) -> int:
    letters = DeadLetters(_spool_dir(args)).read()
    if not letters and not args.json:
        print(f"no dead letters in {_spool_dir(args)}: every settlement was taken")
        return 0
    _emit(args, {"dead_letters": [_letter_json(x) for x in letters]}, _letters_table(letters))
    return 0


def cmd_settlements_replay(args: argparse.Namespace) -> int:
    """Send every dead letter again (after the cause is fixed); keep those still refused."""
    billed: list[usage_pb2.SettleOutcome] = []

    def replay(letters: list[DeadLetter]) -> list[DeadLetter]:
        with _service_client() as service:
            response = service.settle_batch([x.settlement.to_pb() for x in letters])
        kept = []
        for letter, outcome in zip(letters, response.settled, strict=True):
            if outcome.error:
                kept.append(
                    DeadLetter(
                        letter.settlement, refusal_from_pb(outcome.refusal), outcome.error, letter.refused_ms
                    )
                )
            else:
                billed.append(outcome)
        return kept

    replayed, kept = DeadLetters(_spool_dir(args)).rewrite(replay)
    cost = sum(o.event.cost_micros for o in billed if not o.duplicate)
    summary = {
        "replayed": replayed,
        "billed": len(billed),
        "billed_cost_micros": cost,
        "still_refused": [_letter_json(x) for x in kept],
    }
    _emit(args, summary, _letters_table(kept) if kept else None)
    if not args.json:
        print(
            f"replayed {replayed}: {len(billed)} billed ({_money(cost)}), {len(kept)} still refused",
            file=sys.stderr,
        )
    return 1 if kept else 0


def cmd_mock_upstream(args: argparse.Namespace) -> int:
    return mock_upstream.run(args)


def cmd_accounts_create(args: argparse.Namespace) -> int:
    with _admin_client() as client:
        r = client.create_account(args.name, args.credit_usd)
    data = {
        "account_id": r.account.id,
        "master_key": {"id": r.master_key.id, "secret": r.master_key_secret},
    }
    if args.json:
        _emit(args, data)
    else:
        print(f"account {r.account.id} ({r.account.name}) with {_money(r.account.credit_micros)} credit")
        print(f"master key {r.master_key.id}: {r.master_key_secret}")
        print("The secret is shown once: store it now (e.g. export SPENDGATE_MASTER_KEY=...).")
    return 0


def cmd_accounts_credit(args: argparse.Namespace) -> int:
    with _admin_client() as client:
        account = client.credit_wallet(args.account_id, args.usd)
    data = {
        "account_id": account.id,
        "credit_micros": account.credit_micros,
        "spent_micros": account.spent_micros,
        "reserved_micros": account.reserved_micros,
        "remaining_micros": account.remaining_micros,
    }
    _emit(args, data, [[k, str(v)] for k, v in data.items()])
    return 0


def _meta(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--meta takes key=value, got {pair!r}")
        out[name] = value
    return out


def cmd_keys_mint(args: argparse.Namespace) -> int:
    with _master_client() as client:
        key, secret = client.create_key(
            args.name,
            scope=args.scope,
            cap_micros=args.cap_usd,
            cap_period=args.period,
            strict=args.strict,
            allowed_models=args.model,
            metadata=_meta(args.meta),
            expires_ms=args.expires_at,
            rate_limits=_rate_limits(args),
        )
    data = {**shapes.key_json(key), "secret": secret}
    if args.json:
        _emit(args, data)
    else:
        _emit(args, data, _key_table([key]))
        print(f"secret: {secret}\nThe secret is shown once: store it with the user.")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    with _master_client() as client:
        keys = list(client.iter_keys(include_revoked=args.all))
    _emit(args, [shapes.key_json(k) for k in keys], _key_table(keys))
    return 0


def cmd_keys_get(args: argparse.Namespace) -> int:
    with _master_client() as client:
        key = client.get_key(args.key_id)
    _emit(args, shapes.key_json(key), _key_table([key]))
    return 0


def cmd_keys_update(args: argparse.Namespace) -> int:
    if args.cap_usd is not None and args.no_cap:
        raise UsageError("--cap-usd and --no-cap cannot be combined")
    if args.model and args.any_model:
        raise UsageError("--model and --any-model cannot be combined")
    if args.expires_at is not None and args.no_expiry:
        raise UsageError("--expires-at and --no-expiry cannot be combined")
    if args.meta and args.clear_meta:
        raise UsageError("--meta and --clear-meta cannot be combined")
    with _master_client() as client:
        key = client.update_key(
            args.key_id,
            name=args.name,
            cap_micros=args.cap_usd,
            remove_cap=args.no_cap,
            cap_period=args.period,
            strict=args.strict,
            allowed_models=args.model or ([] if args.any_model else None),
            expires_ms=args.expires_at,
            remove_expiry=args.no_expiry,
            metadata=_meta(args.meta) if args.meta or args.clear_meta else None,
            rate_limits=_rate_limits(args),
        )
    _emit(args, shapes.key_json(key), _key_table([key]))
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    if args.grace_seconds is not None and args.grace_seconds < 0:
        raise UsageError("--grace-seconds must not be negative")
    grace_ms = None if args.grace_seconds is None else args.grace_seconds * 1000
    with _master_client() as client:
        key, secret = client.rotate_key(args.key_id, grace_ms)
    data = {**shapes.key_json(key), "secret": secret}
    if args.json:
        _emit(args, data)
    else:
        _emit(args, data, _key_table([key]))
        ends = key.previous_secret_expires_ms
        old = f"until {iso_utc(ends)}" if ends else "no longer"
        print(f"secret: {secret}\nThe new secret is shown once. The old secret works {old}.")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    with _master_client() as client:
        key = client.revoke_key(args.key_id)
    _emit(args, shapes.key_json(key), _key_table([key]))
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    with _master_client() as client:
        usage = client.get_usage(args.from_ms, args.to_ms, args.group_by or "")
    if usage.group_by:
        groups = [[usage.group_by.upper(), "KEYS", "REQUESTS", "INPUT", "OUTPUT", "COST", "FEE"]]
        for g in usage.groups:
            value = g.value if g.HasField("value") else "(none)"
            cost, fee = _money(g.cost_micros), _money(g.fee_micros)
            counts = [str(len(g.key_ids)), str(g.requests), str(g.input_tokens), str(g.output_tokens)]
            groups.append([value, *counts, cost, fee])
        _emit(args, shapes.usage_json(usage), groups)
        return 0
    rows = [["KEY", "NAME", "MODEL", "REQUESTS", "INPUT", "OUTPUT", "COST", "FEE"]]
    for k in usage.by_key:
        for m in k.by_model:
            rows.append(
                [
                    k.key_id,
                    k.name,
                    f"{m.provider}/{m.model}",
                    str(m.requests),
                    str(m.input_tokens),
                    str(m.output_tokens),
                    _money(m.cost_micros),
                    _money(m.fee_micros),
                ]
            )
    _emit(args, shapes.usage_json(usage), rows)
    return 0


def cmd_prices(args: argparse.Namespace) -> int:
    """`catalog list`, by its older name."""
    args.provider = args.model = None
    return catalog_cli.cmd_list(args, _reader_client, _emit)


def _reader_client() -> ControlPlaneClient:
    return _master_client() if os.environ.get("SPENDGATE_MASTER_KEY") else _admin_client()


# parser ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spendgate", description="Self-hosted AI API gateway for per-user billing."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def json_flag(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--json", action="store_true", help="print JSON for scripts")
        return p

    def serving_flags(p: argparse.ArgumentParser, control_plane: bool = True, workers: bool = True) -> None:
        p.add_argument(
            "--log-format",
            choices=logs.FORMATS,
            help="text (default) or json: one object a line (or SPENDGATE_LOG_FORMAT)",
        )
        if workers:
            p.add_argument(
                "--access-log",
                action="store_true",
                help="a line per request, with its request id (or SPENDGATE_ACCESS_LOG=on)",
            )
        if control_plane:
            p.add_argument(
                "--metrics-port",
                type=int,
                default=os.environ.get("SPENDGATE_METRICS_PORT") or None,  # (argparse applies `type`)
                help="serve the control plane's /metrics over HTTP on this port "
                "(default: $SPENDGATE_METRICS_PORT, else not served)",
            )

    cp = sub.add_parser("controlplane", help="run the control plane (gRPC)")
    cp.add_argument(
        "--data-dir",
        default=os.environ.get("SPENDGATE_DATA_DIR", DEFAULT_DATA_DIR),
        help="database and tokens (default: $SPENDGATE_DATA_DIR, else %(default)s)",
    )
    cp.add_argument("--db", help="database URL (default: SQLite in the data dir); postgresql://… to scale")
    cp.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    cp.add_argument("--grpc-port", type=int, default=50051, help="port to listen on (default %(default)s)")
    cp.add_argument("--catalog", help="TOML price file merged over the built-in catalog")
    cp.add_argument(
        "--fee-bps", type=int, default=700, help="operator fee in basis points (default 700 = 7%%)"
    )
    serving_flags(cp, workers=False)
    cp.set_defaults(func=cmd_controlplane)

    dp = sub.add_parser("dataplane", help="run data-plane workers (HTTP) against a control plane")
    dp.add_argument(
        "--controlplane",
        default=os.environ.get("SPENDGATE_CONTROLPLANE", DEFAULT_TARGET),
        help="the control plane's host:port (default: $SPENDGATE_CONTROLPLANE, else %(default)s)",
    )
    dp.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    dp.add_argument("--http-port", type=int, default=8080, help="HTTP port (default %(default)s)")
    dp.add_argument("--workers", type=int, default=1, help="worker processes (default %(default)s)")
    dp.add_argument(
        "--spool-dir",
        default=os.environ.get("SPENDGATE_SPOOL_DIR"),
        help="required (or SPENDGATE_SPOOL_DIR): where workers keep undelivered settlements "
        "(durable; replayed on restart); a directory of its own, not the working directory",
    )
    serving_flags(dp, control_plane=False)
    dp.set_defaults(func=cmd_dataplane)

    up = sub.add_parser("up", help="the embedded default: control plane + data-plane workers")
    up.add_argument(
        "--data-dir",
        default=os.environ.get("SPENDGATE_DATA_DIR", DEFAULT_DATA_DIR),
        help="database, tokens and spool (default: $SPENDGATE_DATA_DIR, else %(default)s)",
    )
    up.add_argument("--db", help="database URL (default: SQLite in the data dir)")
    up.add_argument("--host", default="127.0.0.1", help="address both planes listen on (default %(default)s)")
    up.add_argument(
        "--http-port", type=int, default=8080, help="the gateway's HTTP port (default %(default)s)"
    )
    up.add_argument(
        "--grpc-port", type=int, default=50051, help="the control plane's port (default %(default)s)"
    )
    up.add_argument(
        "--workers", type=int, default=1, help="data-plane worker processes (default %(default)s)"
    )
    up.add_argument("--catalog", help="TOML price file merged over the built-in catalog")
    up.add_argument(
        "--fee-bps",
        type=int,
        default=700,
        help="operator fee on cost, basis points (default %(default)s = 7 %%)",
    )
    serving_flags(up)
    up.set_defaults(func=cmd_up)

    mock = sub.add_parser(
        "mock-upstream", help="a fake OpenAI/Anthropic server for tests and demos (no internet needed)"
    )
    mock_upstream.add_arguments(mock)
    mock.set_defaults(func=cmd_mock_upstream)

    accounts = sub.add_parser("accounts", help="operator: accounts and wallets").add_subparsers(
        dest="action", required=True
    )
    create = json_flag(accounts.add_parser("create", help="create an account and its master key"))
    create.add_argument("name")
    create.add_argument("--credit-usd", type=_usd, default=0, help="the wallet's opening credit (default 0)")
    create.set_defaults(func=cmd_accounts_create)
    credit = json_flag(accounts.add_parser("credit", help="top up an account's wallet"))
    credit.add_argument("account_id")
    credit.add_argument("--usd", type=_usd, required=True, help="the amount to add, in USD (exact)")
    credit.set_defaults(func=cmd_accounts_credit)

    keys = sub.add_parser("keys", help="your account's keys (SPENDGATE_MASTER_KEY)").add_subparsers(
        dest="action", required=True
    )
    mint = json_flag(keys.add_parser("mint", help="mint a key; its secret is shown once"))
    mint.add_argument("name")
    mint.add_argument(
        "--scope", choices=sorted(SCOPES), default="standard", help="standard (an end user's) or master"
    )
    mint.add_argument("--cap-usd", type=_usd, help="hard spend cap in USD (default: none)")
    mint.add_argument(
        "--period", choices=sorted(PERIODS), default="lifetime", help="when the cap resets (default lifetime)"
    )
    mint.add_argument("--strict", action="store_true", help="admit only requests whose whole estimate fits")
    mint.add_argument("--model", action="append", default=[], help="allowed model (repeat); default: all")
    mint.add_argument("--meta", action="append", default=[], help="metadata key=value (repeat)")
    mint.add_argument(
        "--expires-at", type=_time_ms, help="when the key stops working: ISO date-time (UTC) or epoch ms"
    )
    mint.add_argument("--rpm", type=_whole, help="requests per minute (default: no limit)")
    mint.add_argument("--tpm", type=_whole, help="tokens per minute: input and output (default: no limit)")
    mint.add_argument("--max-parallel", type=_whole, help="requests in flight at once (default: no limit)")
    mint.set_defaults(func=cmd_keys_mint)
    lst = json_flag(keys.add_parser("list", help="your keys: caps, spend, what is held, state"))
    lst.add_argument("--all", action="store_true", help="include revoked keys")
    lst.set_defaults(func=cmd_keys_list)
    get = json_flag(keys.add_parser("get", help="one key (never its secret)"))
    get.add_argument("key_id", help="the key's id (key_…)")
    get.set_defaults(func=cmd_keys_get)
    upd = json_flag(keys.add_parser("update", help="change a key's name, cap, period, strictness or models"))
    upd.add_argument("key_id", help="the key's id (key_…)")
    upd.add_argument("--name", help="a new name")
    upd.add_argument("--cap-usd", type=_usd, help="a new hard cap in USD")
    upd.add_argument("--no-cap", action="store_true", help="remove the cap")
    upd.add_argument("--period", choices=sorted(PERIODS), help="when the cap resets (UTC midnight)")
    upd.add_argument(
        "--strict",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="admit only requests whose whole estimate fits (unchanged unless given)",
    )
    upd.add_argument("--model", action="append", default=[], help="allowed model (repeat): replaces the list")
    upd.add_argument("--any-model", action="store_true", help="allow every catalog model")
    upd.add_argument("--expires-at", type=_time_ms, help="a new expiry: ISO date-time (UTC) or epoch ms")
    upd.add_argument("--no-expiry", action="store_true", help="the key no longer expires")
    upd.add_argument(
        "--meta", action="append", default=[], help="metadata key=value (repeat): replaces it all"
    )
    upd.add_argument("--clear-meta", action="store_true", help="remove all metadata")
    upd.add_argument("--rpm", type=_whole, help="requests per minute; 0 removes the limit")
    upd.add_argument("--tpm", type=_whole, help="tokens per minute; 0 removes the limit")
    upd.add_argument("--max-parallel", type=_whole, help="requests in flight at once; 0 removes the limit")
    upd.set_defaults(func=cmd_keys_update)
    rot = json_flag(
        keys.add_parser("rotate", help="a new secret for the same key (id, cap, spend kept); shown once")
    )
    rot.add_argument("key_id", help="the key's id (key_…)")
    rot.add_argument(
        "--grace-seconds",
        type=_whole,
        help="how long the old secret keeps working (default 86400 = 24 h; 0: stops now; at most 30 days)",
    )
    rot.set_defaults(func=cmd_keys_rotate)
    rev = json_flag(keys.add_parser("revoke", help="revoke a key for good: refused from the next request"))
    rev.add_argument("key_id", help="the key's id (key_…)")
    rev.set_defaults(func=cmd_keys_revoke)

    usage = json_flag(sub.add_parser("usage", help="per-key, per-model usage (SPENDGATE_MASTER_KEY)"))
    usage.add_argument(
        "--from", dest="from_ms", type=_time_ms, required=True, help="epoch ms or ISO date, UTC"
    )
    usage.add_argument(
        "--to", dest="to_ms", type=_time_ms, required=True, help="epoch ms or ISO date, exclusive"
    )
    usage.add_argument(
        "--group-by", help="metadata.<key>: totals per value of that key tag (e.g. metadata.user_id)"
    )
    usage.set_defaults(func=cmd_usage)

    settlements = sub.add_parser(
        "settlements", help="operator: settlements the control plane refused (dead letters)"
    ).add_subparsers(dest="settlements_command", required=True)
    for name, func, text in (
        ("list", cmd_settlements_list, "list the dead letters: usage not billed yet, and why"),
        (
            "replay",
            cmd_settlements_replay,
            "send them again once the cause is fixed; keep those still refused",
        ),
    ):
        cmd = json_flag(settlements.add_parser(name, help=text))
        cmd.add_argument(
            "--spool-dir",
            help="the data plane's spool directory (default: $SPENDGATE_SPOOL_DIR, else "
            "$SPENDGATE_DATA_DIR/spool as `spendgate up` uses, else ./spendgate-data/spool)",
        )
        cmd.set_defaults(func=func)

    catalog_cli.register(sub, json_flag, _reader_client, _admin_client, _emit)
    export_cli.register(sub, json_flag, _emit, DEFAULT_DATA_DIR)
    prices = json_flag(sub.add_parser("prices", help="the pricing catalog (see also `catalog list`)"))
    prices.add_argument("--history", action="store_true", help="every effective-dated row")
    prices.set_defaults(func=cmd_prices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    serving = args.command in ("controlplane", "dataplane", "up", "mock-upstream")
    # Only the data-plane workers keep their metrics in files; prometheus-client decides when it is
    # first imported, so this process (the control plane's) must not see the variable (serve.py).
    args.metrics_dir = os.environ.pop("PROMETHEUS_MULTIPROC_DIR", "") if serving else ""
    try:
        args.log_format = getattr(args, "log_format", None) or logs.log_format(os.environ)
    except ValueError as exc:
        print(f"spendgate: {exc}", file=sys.stderr)
        return 2
    args.access_log = getattr(args, "access_log", False) or logs.access_log(os.environ)
    logs.configure(
        args.log_format,
        logging.INFO if serving else logging.WARNING,
        text_format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except (UsageError, export_cli.ExportUsageError) as exc:
        print(f"spendgate: {exc}", file=sys.stderr)
        return 2
    except SpendgateRpcError as exc:
        print(f"spendgate: {exc.code.name}: {exc.details}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(
            f"spendgate: {exc.strerror}; pick another with --grpc-port / --http-port / --metrics-port",
            file=sys.stderr,
        )
        return 1


def _check_http_port(host: str, port: int) -> None:
    """Fail before anything starts, with one line, rather than in a worker's traceback."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise OSError(errno.EADDRINUSE, f"the HTTP port {host}:{port} is in use") from None


if __name__ == "__main__":
    sys.exit(main())

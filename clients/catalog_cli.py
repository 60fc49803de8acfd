"""`spendgate catalog list|show|diff|apply`: the prices a control plane bills by, and
what a newer genai-prices release (or a catalog file) would change before it is applied.

    spendgate catalog list [--provider P] [--model TEXT] [--history]
    spendgate catalog show MODEL [--provider P]
    spendgate catalog diff [--catalog FILE]      what `apply` would change
    spendgate catalog apply [--catalog FILE]     (admin token)

`diff` and `apply` read the catalog this command's own installation builds: the
genai-prices release installed beside it, the built-in files, and FILE over them.
So an upgrade is `pip install -U genai-prices`, `spendgate catalog diff`, then
`spendgate catalog apply`: the control plane stores the changed rows at once and the
data planes pick them up on their next catalog refresh (30 s), with no restart."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clients.client import ControlPlaneClient
from controlplane.money import Price
from spendgate import shapes
from spendgate.contract import RATES, format_usd
from spendgate.v1 import usage_pb2

Emit = Callable[[argparse.Namespace, Any, "list[list[str]] | None"], None]

# How each rate is shown: its unit, and how many units its price is quoted per.
_UNITS = {
    "input_micros_per_mtok": "input/M",
    "output_micros_per_mtok": "output/M",
    "cached_input_micros_per_mtok": "cached/M",
    "cache_write_micros_per_mtok": "cache write/M",
    "cache_write_1h_micros_per_mtok": "1h cache write/M",
    "audio_input_micros_per_mtok": "audio in/M",
    "audio_output_micros_per_mtok": "audio out/M",
    "image_input_micros_per_mtok": "image in/M",
    "characters_micros_per_mchar": "char/M",
    "audio_seconds_micros_per_msec": "audio s/M",
    "images_micros_per_mimage": "image/M",
    "web_search_micros_per_mcall": "web search/M",
    "file_search_micros_per_mcall": "file search/M",
    "request_micros_per_mrequest": "request/M",
}


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _rates(rates: dict[str, int | None]) -> str:
    return ", ".join(f"{_UNITS[n]} ${format_usd(v)}" for n, v in rates.items() if v is not None)


def _price_rates(price: Price) -> dict[str, int | None]:
    return {name: getattr(price, name) for name in RATES}


def _rule_text(price: Price) -> list[str]:
    return [f"{rule.label}: {_rates(dict(rule.rates))}" for rule in price.rules]


def _listing(client: ControlPlaneClient, history: bool) -> list[Price]:
    response = client.list_prices(include_history=history)
    return [_from_pb(p) for p in response.prices]


def _from_pb(msg: usage_pb2.Price) -> Price:
    from controlplane.services import convert  # (see desired)

    return replace(convert.price_from(msg), source=msg.source, origin=msg.origin)


def cmd_list(args: argparse.Namespace, client: Callable[[], ControlPlaneClient], emit: Emit) -> int:
    with client() as c:
        response = c.list_prices(include_history=args.history)
    wanted = [
        p
        for p in response.prices
        if (not args.provider or p.provider == args.provider) and (not args.model or args.model in p.model)
    ]
    rows = [["PROVIDER", "MODEL", "INPUT/M", "CACHED/M", "OUTPUT/M", "OTHER", "RULES", "MAX OUT", "FROM"]]
    for msg in wanted:
        p = _from_pb(msg)
        other = {n: v for n, v in _price_rates(p).items() if n not in RATES[:3]}
        rows.append(
            [
                p.provider,
                p.model,
                "$" + format_usd(p.input_micros_per_mtok),
                "-"
                if p.cached_input_micros_per_mtok is None
                else "$" + format_usd(p.cached_input_micros_per_mtok),
                "$" + format_usd(p.output_micros_per_mtok),
                _rates(other) or "-",
                "; ".join(rule.label for rule in p.rules) or "-",
                str(p.max_output_tokens),
                _day(p.effective_from_ms),
            ]
        )
    emit(args, {"fee_bps": response.fee_bps, "prices": [shapes.price_json(p) for p in wanted]}, rows)
    return 0


def cmd_show(args: argparse.Namespace, client: Callable[[], ControlPlaneClient], emit: Emit) -> int:
    with client() as c:
        response = c.list_prices(include_history=True)
    found = [
        p
        for p in response.prices
        if p.model == args.model and (not args.provider or p.provider == args.provider)
    ]
    if not found:
        print(f"no catalog rows for {args.model}")
        return 1
    if args.json:
        emit(args, {"prices": [shapes.price_json(p) for p in found]}, None)
        return 0
    for msg in sorted(found, key=lambda p: (p.provider, -p.effective_from_ms)):
        p = _from_pb(msg)
        print(f"{p.provider}/{p.model}  from {_day(p.effective_from_ms)} UTC  ({p.origin or 'catalog'})")
        print(f"  rates: {_rates(_price_rates(p))}")
        for line in _rule_text(p):
            print(f"  rule {line}")
        print(f"  max output tokens: {p.max_output_tokens}")
        print(f"  source: {p.source}")
    return 0


def desired(file: Path | None, now_ms: int) -> list[Price]:
    # The catalog, genai-prices behind it, takes most of a second to import: only the
    # commands that read it import it, and every other `spendgate` command starts without.
    from controlplane import catalog

    return catalog.merged(file, now_ms)


def diff(current: list[Price], wanted: list[Price], now_ms: int) -> list[dict[str, Any]]:
    """What syncing `wanted` over the stored rows (`current`, with history) would do."""
    from controlplane import catalog  # (see desired)

    by_model: dict[tuple[str, str], list[Price]] = {}
    for row in current:
        by_model.setdefault((row.provider, row.model), []).append(row)
    changes: list[dict[str, Any]] = []
    for price in wanted:
        rows = sorted(by_model.get((price.provider, price.model), []), key=lambda p: -p.effective_from_ms)
        at = max(now_ms, price.effective_from_ms)
        in_force = catalog.in_force(rows, at)
        name = f"{price.provider}/{price.model}"
        when = "now" if price.effective_from_ms <= now_ms else _day(price.effective_from_ms)
        if in_force is not None and in_force.origin == "api":
            if not catalog.same_price(in_force, price):
                changes.append({"model": name, "change": "kept", "why": "an UpsertPrice row is in force"})
            continue
        stored = [r for r in rows if r.origin != "api"]
        base = (
            next((r for r in stored if r.effective_from_ms == price.effective_from_ms), None)
            if price.effective_from_ms > now_ms
            else catalog.in_force(stored, now_ms)
        )
        if base is None:
            changes.append(
                {"model": name, "change": "added", "from": when, "rates": _rates(_price_rates(price))}
            )
        elif not catalog.same_price(base, price):
            fields = {
                n: [getattr(base, n), getattr(price, n)]
                for n in (*RATES, "max_output_tokens")
                if getattr(base, n) != getattr(price, n)
            }
            entry: dict[str, Any] = {"model": name, "change": "changed", "from": when, "fields": fields}
            if base.rules != price.rules:
                entry["rules"] = [_rule_text(base), _rule_text(price)]
            changes.append(entry)
    return changes


def cmd_diff(args: argparse.Namespace, client: Callable[[], ControlPlaneClient], emit: Emit) -> int:
    now = int(time.time() * 1000)
    with client() as c:
        current = _listing(c, history=True)
    from controlplane import genai_catalog  # (see desired)

    changes = diff(current, desired(args.catalog, now), now)
    _, skipped = genai_catalog.rows_from(now)
    covered = {(p.provider, p.model) for p in current}
    left_out = [s for s in skipped if (s.provider, s.model) not in covered]
    if args.json:
        emit(args, {"changes": changes, "left_out": [vars(s) for s in left_out]}, None)
        return 0
    print(f"genai-prices {genai_catalog.package_version()}: {len(changes)} change(s)")
    for change in changes:
        if change["change"] == "added":
            print(f"  + {change['model']} from {change['from']}: {change['rates']}")
        elif change["change"] == "kept":
            print(f"  = {change['model']}: not changed, {change['why']}")
        else:
            fields = ", ".join(
                f"{_UNITS.get(n, n)} {_plain(a, n)} -> {_plain(b, n)}"
                for n, (a, b) in change["fields"].items()
            )
            print(f"  ~ {change['model']} from {change['from']}: {fields}")
            for before, after in [change.get("rules", ([], []))]:
                if before or after:
                    print(f"      rules {before or '-'} -> {after or '-'}")
    if left_out:
        print(f"  {len(left_out)} genai-prices model(s) left out (not priceable exactly here), e.g.:")
        for s in left_out[:5]:
            print(f"    {s.provider}/{s.model}: {s.reason.split(': ', 1)[-1]}")
    return 0


def _plain(value: int | None, name: str) -> str:
    if value is None:
        return "-"
    return str(value) if name == "max_output_tokens" else "$" + format_usd(value)


def cmd_apply(args: argparse.Namespace, client: Callable[[], ControlPlaneClient], emit: Emit) -> int:
    from controlplane.services import convert  # (see desired)

    now = int(time.time() * 1000)
    rows = [convert.price_to_pb(p) for p in desired(args.catalog, now)]
    with client() as c:
        added = c.apply_catalog(rows)
    emit(args, {"added": added}, [[f"{added} catalog row(s) added; data planes refresh within 30 s"]])
    return 0


def register(
    sub: Any,
    json_flag: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
    reader: Callable[[], ControlPlaneClient],
    admin: Callable[[], ControlPlaneClient],
    emit: Emit,
) -> None:
    group = sub.add_parser("catalog", help="the prices billed by, and upgrading them").add_subparsers(
        dest="catalog_command", required=True
    )
    lst = json_flag(group.add_parser("list", help="prices in force (or every row with --history)"))
    lst.add_argument("--provider", help="only this provider")
    lst.add_argument("--model", help="only models whose name contains this")
    lst.add_argument("--history", action="store_true", help="every effective-dated row")
    lst.set_defaults(func=lambda a: cmd_list(a, reader, emit))
    show = json_flag(group.add_parser("show", help="every row of one model: dates, rates, tiers, windows"))
    show.add_argument("model")
    show.add_argument("--provider", help="when several providers serve the name")
    show.set_defaults(func=lambda a: cmd_show(a, reader, emit))
    for name, text, func in (
        ("diff", "what apply would change (installed genai-prices + built-in files + --catalog)", cmd_diff),
        ("apply", "store the changes in the control plane (admin token); no restart", cmd_apply),
    ):
        cmd = json_flag(group.add_parser(name, help=text))
        cmd.add_argument(
            "--catalog", type=Path, help="the operator's catalog file, as given to the control plane"
        )
        cmd.set_defaults(func=lambda a, f=func: f(a, admin, emit))

"""Which sinks to export to, from the TOML file named by SPENDGATE_CONFIG (`[exports.NAME]`
tables) and the environment (SPENDGATE_EXPORTS=NAME,… and SPENDGATE_EXPORT_<NAME>_<OPTION>,
which win over the file). docs/exports.md lists every option."""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from sqlalchemy import Engine

from controlplane.exports.cursors import Cursors
from controlplane.exports.runner import ExportRunner, Policy, SinkExporter
from controlplane.exports.sink import VALUE_FIELDS, Sink, Template
from controlplane.records import Clock

KINDS = ("stripe", "lago", "openmeter")
DEFAULT_PG_LAG_SECONDS = 10.0
Value = str | int | float

_COMMON: dict[str, type] = {
    "kind": str,
    "api_key": str,
    "api_key_env": str,
    "base_url": str,
    "batch_size": int,
    "poll_seconds": float,
    "backoff_seconds": float,
    "max_backoff_seconds": float,
    "lease_seconds": float,
    "lag_seconds": float,
    "start": str,
}
_BY_KIND: dict[str, dict[str, type]] = {
    "stripe": {
        "event_name": str,
        "customer": str,
        "value": str,
        "customer_key": str,
        "value_key": str,
        "identifier_prefix": str,
    },
    "lago": {"code": str, "subscription": str, "amount": str, "transaction_prefix": str},
    "openmeter": {"type": str, "source": str, "subject": str},
}


class ExportConfigError(ValueError):
    """A sink's configuration is wrong; the message names the sink and the option."""


def _module(kind: str) -> ModuleType:
    """A sink's module, imported only when a sink of its kind is configured: its client
    library is an optional dependency (`pip install 'spendgate[exports]'`)."""
    try:
        return importlib.import_module(f"controlplane.exports.to_{kind}")
    except ImportError as exc:
        raise ExportConfigError(
            f"the {kind} sink needs its official client ({exc.name}): pip install 'spendgate[exports]'"
        ) from None


@dataclass(frozen=True)
class SinkConfig:
    name: str
    kind: str
    options: Mapping[str, Value]

    def _get(self, option: str, default: Value) -> Value:
        return self.options.get(option, default)

    def _str(self, option: str, default: str = "") -> str:
        return str(self._get(option, default))

    def _num(self, option: str, default: float) -> float:
        value = float(self._get(option, default))
        if value < 0:
            raise ExportConfigError(f"exports.{self.name}.{option}: must not be negative")
        return value

    def policy(self, postgres: bool) -> Policy:
        start = self._str("start", "beginning")
        if start not in ("beginning", "end"):
            raise ExportConfigError(f"exports.{self.name}.start: 'beginning' or 'end', not {start!r}")
        batch = int(self._get("batch_size", 100))
        if not 1 <= batch <= 1000:
            raise ExportConfigError(f"exports.{self.name}.batch_size: between 1 and 1000")
        return Policy(
            batch_size=batch,
            poll_seconds=self._num("poll_seconds", 2.0),
            backoff_seconds=self._num("backoff_seconds", 1.0),
            max_backoff_seconds=self._num("max_backoff_seconds", 300.0),
            lease_seconds=self._num("lease_seconds", 30.0),
            lag_seconds=self._num("lag_seconds", DEFAULT_PG_LAG_SECONDS if postgres else 0.0),
            start_at_end=start == "end",
        )

    def api_key(self, env: Mapping[str, str]) -> str:
        if "api_key" in self.options:
            return self._str("api_key")
        variable = self._str("api_key_env")
        if variable:
            if not env.get(variable):
                raise ExportConfigError(f"exports.{self.name}.api_key_env: {variable} is not set")
            return env[variable]
        return ""

    def _template(self, option: str, default: str) -> Template:
        try:
            return Template(self._str(option, default), f"exports.{self.name}.{option}")
        except ValueError as exc:
            raise ExportConfigError(str(exc)) from None

    def build(self, env: Mapping[str, str]) -> Sink:
        key = self.api_key(env)
        if not key and self.kind != "openmeter":  # a self-hosted OpenMeter may take no token
            raise ExportConfigError(f"exports.{self.name}: needs api_key (or api_key_env)")
        mod = _module(self.kind)
        sink: Sink
        if self.kind == "stripe":
            value = self._str("value", "cost_micros")
            if value not in VALUE_FIELDS:
                raise ExportConfigError(f"exports.{self.name}.value: one of {', '.join(VALUE_FIELDS)}")
            sink = mod.StripeSink(
                mod.StripeSettings(
                    api_key=key,
                    event_name=self._str("event_name", "spendgate_usage"),
                    customer=self._template("customer", "{metadata.stripe_customer_id}"),
                    value=value,
                    base_url=self._str("base_url"),
                    customer_key=self._str("customer_key", "stripe_customer_id"),
                    value_key=self._str("value_key", "value"),
                    identifier_prefix=self._str("identifier_prefix"),
                )
            )
            return sink
        if self.kind == "lago":
            amount = self._str("amount")
            if amount not in ("", "cost_micros", "fee_micros", "total_micros"):
                raise ExportConfigError(
                    f"exports.{self.name}.amount: cost_micros, fee_micros, total_micros or empty"
                )
            sink = mod.LagoSink(
                mod.LagoSettings(
                    api_key=key,
                    code=self._str("code", "spendgate_usage"),
                    subscription=self._template("subscription", "{metadata.lago_subscription_id}"),
                    base_url=self._str("base_url"),
                    amount=amount,
                    transaction_prefix=self._str("transaction_prefix"),
                )
            )
            return sink
        sink = mod.OpenMeterSink(
            mod.OpenMeterSettings(
                api_key=key,
                subject=self._template("subject", "{key_id}"),
                event_type=self._str("type", "spendgate.usage"),
                source=self._str("source", "spendgate"),
                base_url=self._str("base_url", "https://openmeter.cloud"),
            )
        )
        return sink


def _typed(sink: str, option: str, kind: str, raw: object) -> Value:
    expected = _COMMON.get(option) or _BY_KIND[kind].get(option)
    if expected is None:
        known = ", ".join(sorted({*_COMMON, *_BY_KIND[kind]}))
        raise ExportConfigError(f"exports.{sink}: unknown option {option!r} for {kind} (known: {known})")
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ExportConfigError(f"exports.{sink}.{option}: a {expected.__name__}, not {raw!r}")
    try:
        return expected(raw)  # type: ignore[no-any-return]
    except ValueError:
        raise ExportConfigError(f"exports.{sink}.{option}: a {expected.__name__}, not {raw!r}") from None


def load_sinks(env: Mapping[str, str], config_file: str | None = None) -> list[SinkConfig]:
    """The configured sinks, or [] when none is."""
    path = config_file if config_file is not None else env.get("SPENDGATE_CONFIG", "")
    tables: dict[str, dict[str, object]] = {}
    if path:
        try:
            doc = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ExportConfigError(f"{path}: {exc}") from None
        for name, table in dict(doc.get("exports", {})).items():
            if not isinstance(table, dict):
                raise ExportConfigError(f"{path}: [exports.{name}] must be a table")
            tables[name] = dict(table)
    for name in filter(None, (n.strip() for n in env.get("SPENDGATE_EXPORTS", "").split(","))):
        tables.setdefault(name, {})
    sinks = []
    for name, table in sorted(tables.items()):
        if not name or len(name) > 64 or not name.replace("_", "").replace("-", "").isalnum():
            raise ExportConfigError(f"exports.{name}: a sink's name is letters, digits, - and _")
        prefix = f"SPENDGATE_EXPORT_{name.upper().replace('-', '_')}_"
        for variable, value in env.items():
            if variable.startswith(prefix):
                table[variable.removeprefix(prefix).lower()] = value
        kind = str(table.get("kind", name if name in KINDS else ""))
        if kind not in KINDS:
            raise ExportConfigError(f"exports.{name}.kind: one of {', '.join(KINDS)}")
        options = {k: _typed(name, k, kind, v) for k, v in table.items()}
        sinks.append(SinkConfig(name, kind, options))
    return sinks


def runner_for(
    engine: Engine, sinks: Sequence[SinkConfig] | None, env: Mapping[str, str], clock: Clock
) -> ExportRunner:
    """The control plane's exporters: the given sinks, or (None) those the environment configures."""
    configured = load_sinks(env) if sinks is None else sinks
    cursors = Cursors(engine)
    postgres = engine.dialect.name == "postgresql"
    return ExportRunner(
        [SinkExporter(s.name, s.build(env), cursors, s.policy(postgres), clock) for s in configured]
    )

"""`spendgate export run` killed (SIGKILL) after the sink took a batch but before the
cursor moved, then run again: the sink ends with every event exactly once (its
idempotency key absorbed the resend) and the cursor at the end. `export status` says
where each sink is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.exports.conftest import Events
from tests.exports.fakes import running, sink_options
from tests.support import SPENDGATE, spendgate

KINDS = ["stripe", "lago", "openmeter"]


def write_config(tmp_path: Path, name: str, options: dict[str, str | int | float]) -> Path:
    lines = [f"[exports.{name}]"] + [f"{k} = {json.dumps(v)}" for k, v in options.items()]
    path = tmp_path / "spendgate.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def db_args(events: Events) -> list[str]:
    return ["--db", events.plane.engine.url.render_as_string(hide_password=False)]


@pytest.mark.parametrize("kind", KINDS)
def test_killed_mid_export_then_restarted_each_event_lands_exactly_once(
    kind: str, events: Events, tmp_path: Path
) -> None:
    ids = events.settle(10)
    with running(kind) as fake:
        options = sink_options(kind, fake.url) | {"batch_size": 4, "lease_seconds": 1, "lag_seconds": 0}
        env = {"SPENDGATE_CONFIG": str(write_config(tmp_path, "billing", options))}
        fake.hold()  # the first request: stored by the sink, never acknowledged
        log = tmp_path / "first-run.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [SPENDGATE, "export", "run", "--once", *db_args(events)],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            assert fake.holding.wait(30), "the exporter never reached the sink: " + log.read_text()
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        fake.release()
        stored_before = len(fake.stored)
        assert stored_before >= 1  # the sink has it ...
        (status,) = events.cursors.status()
        assert status.position == 0 and status.behind == 10  # ... the cursor does not

        time.sleep(1.1)  # the dead exporter's lease runs out
        done = spendgate("export", "run", "--once", *db_args(events), env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "caught up" in done.stdout

        assert fake.ids() == sorted(ids)  # each exactly once ...
        assert len(fake.received) > len(ids)  # ... though some were sent twice
        assert set(fake.received[:stored_before]) <= set(fake.received[stored_before:])
        assert fake.refusals == []
        (status,) = events.cursors.status()
        assert (status.behind, status.exported) == (0, 10)

        shown = spendgate("export", "status", *db_args(events), "--json", env=env)
        assert shown.returncode == 0, shown.stderr
        (row,) = json.loads(shown.stdout)["sinks"]
        assert (row["sink"], row["kind"], row["behind"], row["configured"]) == ("billing", kind, 0, True)
        assert row["position"] == status.position and row["last_error"] == ""


def test_status_shows_a_failing_sink_and_one_not_started(events: Events, tmp_path: Path) -> None:
    events.settle(3)
    with running("lago") as fake:
        fake.fail_next(10**6)
        config = tmp_path / "spendgate.toml"
        options = sink_options("lago", fake.url)
        lines = ["[exports.lago]"] + [f"{k} = {json.dumps(v)}" for k, v in options.items()]
        lines += ["[exports.meter]", 'kind = "openmeter"', 'base_url = "http://127.0.0.1:9"']
        config.write_text("\n".join(lines) + "\n")
        env = {"SPENDGATE_CONFIG": str(config)}
        ran = spendgate("export", "run", "--once", "--sink", "lago", *db_args(events), env=env)
        assert ran.returncode == 1 and "failed" in ran.stdout and "500" in ran.stdout
        shown = spendgate("export", "status", *db_args(events), env=env)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].split()[:4] == ["SINK", "KIND", "POSITION", "BEHIND"]
        lago = next(line for line in lines if line.startswith("lago "))
        assert lago.split()[2:5] == ["0", "3", "0"] and "500" in lago
        assert any(line.startswith("meter ") and "not started" in line for line in lines)


def test_a_bad_sink_configuration_is_one_clear_line(events: Events, tmp_path: Path) -> None:
    config = tmp_path / "spendgate.toml"
    config.write_text('[exports.stripe]\napi_key = "sk"\ncustomer = "{metadata}"\n')
    ran = spendgate("export", "run", "--once", *db_args(events), env={"SPENDGATE_CONFIG": str(config)})
    assert ran.returncode == 2
    assert ran.stderr.strip() == (
        "spendgate: exports.stripe.customer: unknown field {metadata} "
        "(use key_id, account_id, key_name or metadata.NAME)"
    )
    config.write_text('[exports.lago]\napi_key = "k"\nbatchsize = 5\n')
    ran = spendgate("export", "status", *db_args(events), env={"SPENDGATE_CONFIG": str(config)})
    assert ran.returncode == 2 and "unknown option 'batchsize' for lago" in ran.stderr

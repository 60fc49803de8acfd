"""The `spendgate` CLI against a real control-plane process."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clients.client import ControlPlaneClient
from spendgate.v1 import usage_pb2
from tests.support import spendgate, start_controlplane, stop


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data = tmp_path_factory.mktemp("cli") / "data"
    proc, address = start_controlplane(data)
    yield address, data
    output = stop(proc)
    assert "admin token" in output or "admin-token" in output


def env_for(address: str, data: Path, **extra: str) -> dict[str, str]:
    return {
        "SPENDGATE_CONTROLPLANE": address,
        "SPENDGATE_DATA_DIR": str(data),
        "SPENDGATE_ADMIN_TOKEN": "",
        **extra,
    }


def run_json(*args: str, env: dict[str, str]) -> Any:
    result = spendgate(*args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_admin_token_is_generated_private_in_the_data_dir(running: tuple[str, Path]) -> None:
    _, data = running
    token_file = data / "admin-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(token_file.read_text().strip()) >= 40


def test_account_keys_and_usage_round_trip(running: tuple[str, Path]) -> None:
    address, data = running
    env = env_for(address, data)
    account = run_json("accounts", "create", "acme", "--credit-usd", "20", env=env)
    assert set(account) == {"account_id", "master_key"}
    master_secret = account["master_key"]["secret"]
    assert master_secret.startswith("sg_live_")
    env["SPENDGATE_MASTER_KEY"] = master_secret

    minted = run_json(
        "keys", "mint", "user_42", "--cap-usd", "5", "--meta", "user=42", "--model", "gpt-4o-mini", env=env
    )
    assert minted["max_spend_usd"] == "5" and minted["max_spend_micros"] == 5_000_000
    assert minted["secret"].startswith("sg_live_") and minted["metadata"] == {"user": "42"}
    key_id = minted["id"]

    listed = run_json("keys", "list", env=env)
    assert key_id in [k["id"] for k in listed] and all("secret" not in k for k in listed)

    updated = run_json("keys", "update", key_id, "--cap-usd", "7.5", "--any-model", env=env)
    assert updated["max_spend_micros"] == 7_500_000 and updated["allowed_models"] == []

    # Usage from one settled request shows up in the rollup.
    with ControlPlaneClient(address, (data / "service-token").read_text().strip()) as service:
        service.settle(
            usage_pb2.SettleRequest(
                request_id="cli-1",
                key_id=key_id,
                provider="openai",
                model="gpt-4o-mini",
                units=usage_pb2.Units(input_tokens=1000, output_tokens=1000),
            )
        )
    now = int(time.time() * 1000)
    usage = run_json("usage", "--from", str(now - 60_000), "--to", str(now + 60_000), env=env)
    (row,) = usage["by_key"]
    assert (
        row["key_id"] == key_id and row["cost_micros"] == 750 and row["by_model"][0]["model"] == "gpt-4o-mini"
    )
    got = run_json("keys", "get", key_id, env=env)
    assert got["spent_micros"] == 750 and got["remaining_micros"] == 7_500_000 - 750

    table = spendgate("keys", "get", key_id, env=env)
    assert table.returncode == 0 and "user_42" in table.stdout and "$7.5" in table.stdout

    revoked = run_json("keys", "revoke", key_id, env=env)
    assert revoked["revoked"] is True
    prices = run_json("prices", env=env)
    assert prices["fee_bps"] == 700 and any(p["model"] == "gpt-5.4" for p in prices["prices"])


def test_rate_limits_are_minted_shown_changed_and_removed(running: tuple[str, Path]) -> None:
    address, data = running
    env = env_for(address, data)
    env["SPENDGATE_MASTER_KEY"] = run_json("accounts", "create", "limits", env=env)["master_key"]["secret"]
    minted = run_json("keys", "mint", "u", "--rpm", "60", "--tpm", "100000", "--max-parallel", "4", env=env)
    assert (minted["rpm_limit"], minted["tpm_limit"], minted["max_parallel_requests"]) == (60, 100_000, 4)
    updated = run_json("keys", "update", minted["id"], "--rpm", "120", "--max-parallel", "0", env=env)
    assert (updated["rpm_limit"], updated["tpm_limit"], updated["max_parallel_requests"]) == (
        120,
        100_000,
        None,
    )
    table = spendgate("keys", "list", env=env)
    assert table.returncode == 0 and "LIMITS" in table.stdout and "120rpm 100000tpm" in table.stdout
    bad = spendgate("keys", "mint", "bad", "--rpm", "-1", env=env)
    assert bad.returncode != 0 and "rpm_limit" in bad.stderr
    huge = "9" * 20  # past int64: a usage error naming the option, not a traceback
    for args in (
        ("keys", "mint", "bad", "--rpm", huge),
        ("keys", "update", minted["id"], "--max-parallel", huge),
        ("keys", "mint", "bad", "--expires-at", huge),
        ("keys", "rotate", minted["id"], "--grace-seconds", huge),
    ):
        refused = spendgate(*args, env=env)
        assert refused.returncode == 2 and args[-2] in refused.stderr and "Traceback" not in refused.stderr


def test_cli_errors_are_clear(running: tuple[str, Path]) -> None:
    address, data = running
    no_key = spendgate("keys", "list", env=env_for(address, data, SPENDGATE_MASTER_KEY=""))
    assert no_key.returncode == 2 and "SPENDGATE_MASTER_KEY" in no_key.stderr
    bad_key = spendgate("keys", "list", env=env_for(address, data, SPENDGATE_MASTER_KEY="sg_live_wrong"))
    assert bad_key.returncode == 1 and "UNAUTHENTICATED" in bad_key.stderr
    bad_money = spendgate("accounts", "create", "x", "--credit-usd", "0.0000001", env=env_for(address, data))
    assert bad_money.returncode == 2 and "finer than one micro-USD" in bad_money.stderr
    no_token = spendgate("accounts", "create", "x", env=env_for(address, data / "missing"))
    assert no_token.returncode == 2 and "SPENDGATE_ADMIN_TOKEN" in no_token.stderr


def test_catalog_diff_shows_an_upgrade_before_apply_stores_it(tmp_path: Path) -> None:
    """An operator reprices from a newer catalog: diff lists the change, apply stores it in the
    running control plane (effective now), and an UpsertPrice override is kept through both."""
    proc, address = start_controlplane(tmp_path / "data")
    try:
        env = env_for(address, tmp_path / "data")
        with ControlPlaneClient(address, (tmp_path / "data" / "admin-token").read_text().strip()) as admin:
            admin.upsert_price(
                usage_pb2.Price(
                    provider="openai", model="gpt-4o", input_micros_per_mtok=1, output_micros_per_mtok=1
                )
            )
        newer = tmp_path / "newer.toml"
        newer.write_text(
            '[[model]]\nprovider = "openai"\nname = "gpt-4o-mini"\ninput_micros_per_mtok = 200000\n'
            'output_micros_per_mtok = 800000\nmax_output_tokens = 16384\nsource = "test"\n\n'
            '[[model]]\nprovider = "openai"\nname = "gpt-4o"\ninput_micros_per_mtok = 9\noutput_micros_per_mtok = 9\n'
        )
        unchanged = run_json("catalog", "diff", env=env)
        assert unchanged["changes"] == [
            {"model": "openai/gpt-4o", "change": "kept", "why": "an UpsertPrice row is in force"}
        ]
        changes = run_json("catalog", "diff", "--catalog", str(newer), env=env)["changes"]
        by_model = {c["model"]: c for c in changes}
        assert by_model["openai/gpt-4o-mini"]["change"] == "changed"
        assert by_model["openai/gpt-4o-mini"]["fields"]["input_micros_per_mtok"] == [150_000, 200_000]
        assert by_model["openai/gpt-4o"]["change"] == "kept"
        text = spendgate("catalog", "diff", "--catalog", str(newer), env=env).stdout
        assert "~ openai/gpt-4o-mini from now: input/M $0.15 -> $0.2" in text
        assert run_json("catalog", "apply", "--catalog", str(newer), env=env) == {"added": 1}
        assert run_json("catalog", "apply", "--catalog", str(newer), env=env) == {"added": 0}
        listed = run_json("catalog", "list", "--provider", "openai", "--model", "gpt-4o", env=env)
        prices = {p["model"]: p for p in listed["prices"]}
        assert prices["gpt-4o-mini"]["input_micros_per_mtok"] == 200_000
        assert prices["gpt-4o"]["input_micros_per_mtok"] == 1  # the operator's UpsertPrice stays
        tts = spendgate("catalog", "list", "--model", "tts-1-hd", env=env).stdout
        assert "char/M $30" in tts  # per-character (and per-second, per-image) rates, not $0
        shown = spendgate("catalog", "show", "gemini-2.5-pro", env=env).stdout
        assert "rule input>200000: input/M $2.5" in shown and "genai-prices" in shown
    finally:
        stop(proc)


def test_a_port_in_use_fails_the_start_with_one_clear_line(running: tuple[str, Path], tmp_path: Path) -> None:
    """gRPC's default SO_REUSEPORT would let a second control plane share the port and answer
    half the calls with other tokens; an HTTP port in use would fail in a worker's traceback."""
    address, _ = running
    grpc_port = address.rsplit(":", 1)[1]
    second = spendgate(
        "controlplane", "--data-dir", str(tmp_path / "b"), "--grpc-port", grpc_port, timeout=30
    )
    assert second.returncode == 1
    assert f"the gRPC port 127.0.0.1:{grpc_port} is in use" in second.stderr
    assert "Traceback" not in second.stderr + second.stdout
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http_port = str(taken.getsockname()[1])
        up = spendgate(
            "up", "--data-dir", str(tmp_path / "c"), "--http-port", http_port, "--grpc-port", "0", timeout=30
        )
    assert up.returncode == 1 and f"the HTTP port 127.0.0.1:{http_port} is in use" in up.stderr
    assert "spendgate is up" not in up.stdout and "Traceback" not in up.stderr + up.stdout


def test_a_standalone_data_plane_needs_its_spool_directory(tmp_path: Path) -> None:
    """Never the working directory by default: a data plane must not litter wherever it starts."""
    result = spendgate("dataplane", "--http-port", "0", env={"SPENDGATE_SPOOL_DIR": ""})
    assert result.returncode == 2 and "needs --spool-dir" in result.stderr
    from dataplane.config import Settings

    assert Settings.from_env({"SPENDGATE_DATA_DIR": str(tmp_path)}).spool_dir == tmp_path / "spool"
    assert Settings.from_env({}).spool_dir is None


def test_every_command_and_option_says_what_it_does() -> None:
    """`spendgate … --help` explains each command and option (issue 14: keys and up had none)."""
    import argparse

    from clients.cli import build_parser

    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for sub_name, sub in action.choices.items():
                    if not helps.get(sub_name):
                        missing.append(f"{name} {sub_name}")
                    walk(sub, f"{name} {sub_name}")
            elif action.option_strings and action.dest not in ("help", "json") and not action.help:
                missing.append(f"{name} {action.option_strings[0]}")

    walk(build_parser(), "spendgate")
    assert missing == []


def test_up_says_how_to_make_an_account_only_until_there_is_one(tmp_path: Path) -> None:
    """The `next:` line works as printed (an absolute data dir, a command that runs), once."""
    import select
    import subprocess

    from tests.support import SPENDGATE, free_port

    def first_lines() -> list[str]:
        proc = subprocess.Popen(
            [SPENDGATE, "up", "--data-dir", str(tmp_path / "d"), "--http-port", str(free_port()),
             "--grpc-port", str(grpc_port), "--workers", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
        )  # fmt: skip
        assert proc.stdout is not None
        out = b""  # what it prints at start, until 3 s of silence (raw reads: nothing buffered behind select)
        while b"spendgate is up" not in out or select.select([proc.stdout], [], [], 3)[0]:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            out += chunk
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()
        return out.decode().splitlines()

    grpc_port = free_port()
    (line,) = [x for x in first_lines() if x.startswith("next: ")]
    exports, _, command = line.removeprefix("next: export ").strip().partition("; ")
    env = dict(pair.split("=", 1) for pair in exports.split())
    assert Path(env["SPENDGATE_DATA_DIR"]).is_absolute()
    proc, address = start_controlplane(tmp_path / "d", port=grpc_port)  # serve it while the command runs
    try:
        argv = command.split()
        result = subprocess.run(
            [SPENDGATE, *argv[1:]], env={**os.environ, **env}, capture_output=True, text=True
        )
        assert result.returncode == 0 and json.loads(result.stdout)["master_key"]["secret"].startswith(
            "sg_live_"
        )
    finally:
        stop(proc)
    assert not [x for x in first_lines() if x.startswith("next: ")]  # an account exists now


def test_a_command_that_reads_no_catalog_or_database_starts_without_them(tmp_path: Path) -> None:
    """Only `catalog` and `exports` import the catalog (genai-prices) and SQLAlchemy: every
    other command would spend about two thirds of a second on them before doing anything."""
    probe = (
        "import sys\n"
        "from clients.cli import main\n"
        "assert main(['settlements', 'list', '--spool-dir', sys.argv[1], '--json']) == 0\n"
        "print(sorted(m for m in ('genai_prices', 'sqlalchemy') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines()[-1] == "[]"

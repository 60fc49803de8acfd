"""The generated code in proto/ is exactly what `python proto/generate.py` makes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "proto" / "spendgate" / "v1"


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    assert spec and spec.loader
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    fresh = {p.name: p.read_bytes() for p in generate.generate(tmp_path)}
    committed = {p.name: p.read_bytes() for p in PACKAGE.glob("*_pb2*.py*")}
    assert fresh.keys() == committed.keys(), "run: python proto/generate.py"
    stale = sorted(name for name in fresh if fresh[name] != committed[name])
    assert not stale, f"stale generated code {stale}: run python proto/generate.py"


def test_every_proto_has_generated_modules() -> None:
    for proto in PACKAGE.glob("*.proto"):
        assert (PACKAGE / f"{proto.stem}_pb2.py").exists()
        assert (PACKAGE / f"{proto.stem}_pb2_grpc.py").exists()

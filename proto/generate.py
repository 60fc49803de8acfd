"""Regenerate the Python code for proto/spendgate/v1/*.proto.

    python proto/generate.py            # rewrite the generated files in place
    python proto/generate.py --out DIR  # write them under DIR instead (used by the staleness test)

The generated modules sit beside their .proto files and are importable as
``spendgate.v1``. Output is reproducible for the grpcio-tools version pinned in
pyproject.toml.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "spendgate" / "v1"


def generate(out: Path) -> list[Path]:
    sources = sorted(PACKAGE_DIR.glob("*.proto"))
    (out / "spendgate" / "v1").mkdir(parents=True, exist_ok=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    # Typed stubs for the generated gRPC code (mypy-protobuf, pinned in pyproject.toml).
    plugin = shutil.which("protoc-gen-mypy_grpc", path=str(Path(sys.executable).parent))
    if plugin is None:
        raise SystemExit("protoc-gen-mypy_grpc not found: pip install -e '.[test]' (mypy-protobuf)")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy_grpc={plugin}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        *(str(p.relative_to(PROTO_ROOT)) for p in sources),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out / "spendgate" / "v1").glob("*_pb2*.py*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTO_ROOT)
    written = generate(parser.parse_args().out)
    print("\n".join(str(p) for p in written), file=sys.stderr)


if __name__ == "__main__":
    main()

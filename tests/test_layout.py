"""The planes meet only through proto/ (the generated messages and spendgate.contract):
checked on every module's imports, so a shortcut across them fails here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# package -> the first-party packages its modules may import (besides themselves)
ALLOWED = {
    "dataplane": {"spendgate"},
    "controlplane": {"spendgate"},
    "spendgate": set(),
    "fakeupstream": set(),
    "clients": {"spendgate"},
}
# The command line is where everything is put together: it runs both planes and the fake provider.
COMPOSITION_ROOTS = {"clients/cli.py", "clients/catalog_cli.py", "clients/export_cli.py"}
FIRST_PARTY = set(ALLOWED) | {"tests", "bench"}


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & FIRST_PARTY


def modules(package: str) -> list[Path]:
    base = ROOT / ("proto/spendgate" if package == "spendgate" else package)
    return [p for p in sorted(base.rglob("*.py")) if "_pb2" not in p.name and "migrations" not in p.parts]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_itself_and_the_contract(package: str) -> None:
    crossings = {
        str(path.relative_to(ROOT)): sorted(imported(path) - {package} - ALLOWED[package])
        for path in modules(package)
        if str(path.relative_to(ROOT)) not in COMPOSITION_ROOTS
    }
    assert {p: names for p, names in crossings.items() if names} == {}
    assert modules(package), f"no modules found for {package}"

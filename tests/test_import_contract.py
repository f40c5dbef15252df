"""The import contract: data flows starter -> Temporal -> workflows -> activities -> store, and domain/
is imported by all and imports nothing of ours."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"domain", "store", "workflows", "activities", "starter", "worker", "settings", "logs"}
FORBIDDEN = {
    "domain": PROJECT - {"domain"},
    "workflows": {"store", "starter", "worker", "settings"},
    "activities": {"starter", "worker", "settings"},
    "store": {"workflows", "activities", "starter", "worker", "settings"},
}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & PROJECT


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_only_what_the_contract_allows(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules found in {package}/"
    broken = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in files
        if imported_packages(path) & FORBIDDEN[package]
    }
    assert broken == {}


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("from store.db import Database\nimport starter.cli\nfrom . import sibling\n")
    assert imported_packages(module) == {"store", "starter"}

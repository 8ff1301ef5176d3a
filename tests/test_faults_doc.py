"""docs/faults.md stays true: every test its table names exists, B1-B14 are all listed, and
every test of tests/test_faults.py and tests/test_addon_faults.py has a row."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "faults.md"


def _rows() -> list[str]:
    return [ln for ln in DOC.read_text(encoding="utf-8").splitlines()
            if ln.startswith("| ") and not ln.startswith("| #") and not ln.startswith("|---")]


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_named_test_exists_and_every_row_names_one():
    rows = _rows()
    assert len(rows) >= 40
    for row in rows:
        refs = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", row)
        assert refs, f"row names no test: {row[:80]}"
        for file, name in refs:
            assert name in _tests_in(ROOT / file), f"{file}::{name} (docs/faults.md) does not exist"


def test_all_faults_of_the_issue_are_listed():
    ids = {row.split("|")[1].strip() for row in _rows()}
    assert {f"B{i}" for i in range(1, 15)} <= ids


def test_every_fault_test_has_a_row():
    named = set(re.findall(r"::(test_\w+)`", DOC.read_text(encoding="utf-8")))
    for file in ("tests/test_faults.py", "tests/test_addon_faults.py"):
        missing = _tests_in(ROOT / file) - named
        assert not missing, f"tests without a row in docs/faults.md: {sorted(missing)}"


def test_cli_docs_link_the_table():
    assert "faults.md" in (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")

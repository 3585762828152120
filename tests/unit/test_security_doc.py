"""docs/security.md stays true: every mitigation it names has an attacker's test that exists.

The threat model lists, for each boundary, its mitigations in tables whose last column names
the tests that prove them (`path::test` in backticks). A mitigation without a test, a test
that was renamed or deleted, or one that is not marked `security` (so `make test` would not
say it ran as one) fails here. The tests are found by reading the files (ast), so this stays
a fast unit test and runs nothing.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "security.md"
TEST_ID = re.compile(r"`((?:tests|e2e)/[\w/]+\.py)::([\w:]+)(?:\[[^\]`]*\])?`")
MIN_ATTACK_TESTS = 30


@dataclass(frozen=True)
class Row:
    section: str
    mitigation: str
    tests: tuple[tuple[str, str], ...]


def _mitigation_rows(text: str) -> list[Row]:
    """Rows of the tables whose header's last column is `Test` (or `Tests`)."""
    rows: list[Row] = []
    section = ""
    in_table = False
    for line in text.splitlines():
        if line.startswith("#"):
            section = line.lstrip("#").strip()
            in_table = False
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not in_table:
            in_table = cells[-1].lower() in {"test", "tests"}
            continue
        if set(cells[0]) <= {"-", ":", " "}:
            continue
        rows.append(
            Row(
                section=section,
                mitigation=cells[0],
                tests=tuple((m.group(1), m.group(2)) for m in TEST_ID.finditer(cells[-1])),
            )
        )
    return rows


def _is_security_mark(node: ast.expr) -> bool:
    """`pytest.mark.security`, bare or inside a list/tuple."""
    if isinstance(node, ast.List | ast.Tuple):
        return any(_is_security_mark(e) for e in node.elts)
    return isinstance(node, ast.Attribute) and node.attr == "security"


def _module_marked(tree: ast.Module) -> bool:
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in stmt.targets
        ):
            return _is_security_mark(stmt.value)
    return False


def _find(tree: ast.Module, dotted: str) -> tuple[bool, bool]:
    """(exists, marked security) for `name` or `Class::name` in a test module."""
    scope: list[ast.stmt] = tree.body
    marked = _module_marked(tree)
    parts = dotted.split("::")
    for i, part in enumerate(parts):
        found = next(
            (
                s
                for s in scope
                if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                and s.name == part
            ),
            None,
        )
        if found is None:
            return False, False
        marked = marked or any(_is_security_mark(d) for d in found.decorator_list)
        if i < len(parts) - 1:
            if not isinstance(found, ast.ClassDef):
                return False, False
            scope = found.body
    return True, marked


def test_every_mitigation_names_an_existing_security_test() -> None:
    rows = _mitigation_rows(DOC.read_text(encoding="utf-8"))
    assert rows, "docs/security.md has no mitigation table (a table whose last column is Test)"
    problems: list[str] = []
    trees: dict[str, ast.Module] = {}
    for row in rows:
        if not row.tests:
            problems.append(f"{row.section}: {row.mitigation!r} names no test")
        for path, name in row.tests:
            if path not in trees:
                file = REPO / path
                if not file.is_file():
                    problems.append(f"{row.section}: {path} does not exist")
                    continue
                trees[path] = ast.parse(file.read_text(encoding="utf-8"))
            exists, marked = _find(trees[path], name)
            if not exists:
                problems.append(f"{row.section}: {path}::{name} does not exist")
            elif not marked:
                problems.append(f"{row.section}: {path}::{name} is not marked security")
    assert not problems, "\n".join(problems)


def test_the_threat_model_names_enough_attacks() -> None:
    named = {t for row in _mitigation_rows(DOC.read_text(encoding="utf-8")) for t in row.tests}
    assert len(named) >= MIN_ATTACK_TESTS, (
        f"docs/security.md names {len(named)} attacker's tests; the threat model promises at "
        f"least {MIN_ATTACK_TESTS}"
    )


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("`tests/security/test_a.py::test_x`", [("tests/security/test_a.py", "test_x")]),
        ("`e2e/test_b.py::TestC::test_y[param-1]`", [("e2e/test_b.py", "TestC::test_y")]),
        ("none", []),
    ],
)
def test_test_ids_are_read_from_a_cell(cell: str, expected: list[tuple[str, str]]) -> None:
    doc = f"## B\n\n| Mitigation | Test |\n|---|---|\n| m | {cell} |\n"
    assert list(_mitigation_rows(doc)[0].tests) == expected


def test_a_missing_or_unmarked_test_is_caught() -> None:
    tree = ast.parse(
        "import pytest\n"
        "@pytest.mark.security\n"
        "def test_marked(): pass\n"
        "def test_plain(): pass\n"
        "class TestK:\n"
        "    def test_in_class(): pass\n"
    )
    assert _find(tree, "test_marked") == (True, True)
    assert _find(tree, "test_plain") == (True, False)
    assert _find(tree, "test_gone") == (False, False)
    assert _find(tree, "TestK::test_in_class") == (True, False)
    marked_module = ast.parse(
        "import pytest\npytestmark = [pytest.mark.security]\ndef test_a(): pass\n"
    )
    assert _find(marked_module, "test_a") == (True, True)

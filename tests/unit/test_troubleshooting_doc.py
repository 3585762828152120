"""docs/troubleshooting.md stays true: every condition type and reason it names exists.

The page tells people what a condition's reason means and what to do about it. Its tables
whose header has the columns `condition` and `reason` name, in backticks, a condition type
and a reason the operator sets. A reason renamed or removed in the code, or a typo on the
page, would send a person looking for a word the operator never writes: each one must be a
string constant somewhere in the package (read with ast, so nothing is imported or run).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "troubleshooting.md"
PACKAGE = REPO / "operator" / "cleo_operator"
NAME = re.compile(r"`([A-Za-z][A-Za-z0-9]*)`")
MIN_REASONS = 35


def _string_constants() -> set[str]:
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


def _named(text: str) -> list[tuple[int, str, str]]:
    """(line, column, name) of every backticked name in the condition and reason columns."""
    named: list[tuple[int, str, str]] = []
    columns: dict[str, int] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.startswith("|"):
            columns = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if columns is None:
            header = [c.lower() for c in cells]
            columns = (
                {"condition": header.index("condition"), "reason": header.index("reason")}
                if "condition" in header and "reason" in header
                else {}
            )
            continue
        if set(cells[0]) <= {"-", ":", " "}:
            continue
        for column, index in columns.items():
            names = NAME.findall(cells[index])
            assert names, f"docs/troubleshooting.md:{number}: no `{column}` in {cells[index]!r}"
            named.extend((number, column, name) for name in names[:1])
    return named


def test_every_condition_and_reason_the_page_names_is_set_by_the_code() -> None:
    constants = _string_constants()
    named = _named(DOC.read_text())
    reasons = {name for _, column, name in named if column == "reason"}
    assert len(reasons) >= MIN_REASONS, f"only {len(reasons)} reasons found: is the table read?"
    unknown = [
        f"docs/troubleshooting.md:{line}: {column} `{name}`"
        for line, column, name in named
        if name not in constants
    ]
    assert unknown == [], "not in the code:\n" + "\n".join(unknown)


def test_a_reason_missing_from_the_code_is_caught() -> None:
    page = (
        "| condition | reason | what |\n|---|---|---|\n| `Ready` | `NoSuchReasonAnywhere` | x |\n"
    )
    (named,) = [n for n in _named(page) if n[1] == "reason"]
    assert named == (3, "reason", "NoSuchReasonAnywhere")
    assert "NoSuchReasonAnywhere" not in _string_constants()


def test_the_page_is_linked_from_the_readme_and_the_install_guide() -> None:
    assert "docs/troubleshooting.md" in (REPO / "README.md").read_text()
    assert "(troubleshooting.md)" in (REPO / "docs" / "install.md").read_text()

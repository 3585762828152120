"""How every `kubectl cleo` command writes its result: a table, or YAML or JSON for scripts.

Why one module: `-o table|yaml|json` means the same thing for every command, and the
decision "rich or plain" must be taken once. Tables (and the status tree, which is a table
with a tree in its name column) are drawn with `rich` only when stdout is a terminal and
NO_COLOR is unset (https://no-color.org); otherwise they are plain, aligned text like
kubectl's own, so that `| grep` and `| awk` work and nothing carries escape codes.

YAML and JSON are the stable, machine-readable forms: keys sorted, the same document whether
or not stdout is a terminal, times in RFC 3339 and sizes in bytes. Table cells are for
people (ages, human sizes) and may change; scripts read `-o json`.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TextIO

import yaml

from cleo_operator.core.times import read_rfc3339

__all__ = [
    "FORMATS",
    "Display",
    "Format",
    "Table",
    "age",
    "human_size",
    "plain_table",
]

Format = Literal["table", "yaml", "json"]
FORMATS: Final[tuple[Format, ...]] = ("table", "yaml", "json")
NO_VALUE: Final = "-"
"""What an empty table cell shows (kubectl shows <none>; a dash keeps columns short)."""


@dataclass(frozen=True)
class Table:
    """Rows of text for people; `bad` marks the rows that must stand out (Ready False...)."""

    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    bad: list[bool] = field(default_factory=list)
    title: str | None = None

    def add(self, *cells: str | None, bad: bool = False) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(tuple(NO_VALUE if cell in (None, "") else str(cell) for cell in cells))
        self.bad.append(bad)


def plain_table(table: Table) -> str:
    """The table as kubectl prints one: upper-case headers, columns three spaces apart."""
    header = tuple(column.upper() for column in table.columns)
    widths = [max(len(row[i]) for row in (header, *table.rows)) for i in range(len(table.columns))]
    lines = []
    if table.title:
        lines.append(table.title)
    for row in (header, *table.rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def human_size(size: int | None) -> str | None:
    """Bytes for people: 1.5 GiB."""
    if size is None:
        return None
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def age(value: object, *, now: datetime.datetime) -> str | None:
    """How long ago an RFC 3339 time was, as kubectl says it (45s, 12m, 3h, 2d)."""
    moment = read_rfc3339(value)
    if moment is None:
        return None
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _stdout_is_rich(stream: TextIO, environ: Mapping[str, str]) -> bool:
    if environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


@dataclass(frozen=True)
class Display:
    """Where and how results go: the format asked for, and whether stdout is a terminal."""

    format: Format = "table"
    rich: bool = False
    """Draw with rich (colour, box drawing, live progress): a terminal without NO_COLOR."""
    stream: TextIO = field(default_factory=lambda: sys.stdout)

    @classmethod
    def for_stdout(
        cls,
        output: Format,
        *,
        environ: Mapping[str, str] = os.environ,
        stream: TextIO | None = None,
    ) -> Display:
        """The display for `-o output` on this process's stdout (or `stream`)."""
        target = stream or sys.stdout
        return cls(format=output, rich=_stdout_is_rich(target, environ), stream=target)

    def write(self, text: str) -> None:
        self.stream.write(text if text.endswith("\n") else text + "\n")
        self.stream.flush()

    def data(self, payload: Mapping[str, Any] | Sequence[Any]) -> None:
        """The machine-readable form (`-o yaml` or `-o json`): keys sorted, stable."""
        self.write(dump(payload, self.format))

    def show(self, payload: Mapping[str, Any] | Sequence[Any], *tables: Table) -> None:
        """`payload` as YAML/JSON, or `tables` for people, as `-o` asks."""
        if self.format != "table":
            self.data(payload)
            return
        for table in tables:
            self.table(table)

    def table(self, table: Table) -> None:
        if not self.rich:
            self.write(plain_table(table))
            return
        from rich.console import Console  # noqa: PLC0415 - only on a terminal
        from rich.table import Table as RichTable  # noqa: PLC0415

        console = Console(file=self.stream, highlight=False)
        drawn = RichTable(title=table.title, box=None, header_style="bold", pad_edge=False)
        for column in table.columns:
            drawn.add_column(column.upper(), overflow="fold")
        for row, bad in zip(table.rows, table.bad, strict=True):
            # Cells are data, not markup: a name with [brackets] stays as it is.
            drawn.add_row(*(_literal(cell) for cell in row), style="bold red" if bad else None)
        console.print(drawn)


def _literal(cell: str) -> Any:
    from rich.text import Text  # noqa: PLC0415

    return Text(cell)


def dump(payload: Mapping[str, Any] | Sequence[Any], output: Format) -> str:
    """YAML or JSON text of `payload`, keys sorted."""
    if output == "json":
        return json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if output == "yaml":
        text: str = yaml.safe_dump(
            payload, sort_keys=True, default_flow_style=False, allow_unicode=True, width=1 << 16
        )
        return text
    raise ValueError(f"not a data format: {output!r}")

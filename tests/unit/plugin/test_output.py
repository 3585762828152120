"""Output: plain tables like kubectl's, rich only on a terminal without NO_COLOR, stable data."""

from __future__ import annotations

import datetime
import io
import json

import pytest
import yaml

from cleo_operator.cli.plugin.output import Display, Table, age, dump, human_size, plain_table

NOW = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_tables_align_columns_and_show_a_dash_for_nothing() -> None:
    table = Table(columns=("name", "last backup"))
    table.add("nightly", "3h")
    table.add("weekly-with-a-long-name", None)
    assert plain_table(table) == (
        "NAME                      LAST BACKUP\n"
        "nightly                   3h\n"
        "weekly-with-a-long-name   -\n"
    )


def test_a_row_of_the_wrong_width_is_a_bug() -> None:
    with pytest.raises(ValueError, match="2 columns"):
        Table(columns=("a", "b")).add("only one")


@pytest.mark.parametrize(
    ("stream", "environ", "rich"),
    [
        (io.StringIO(), {}, False),
        (Terminal(), {}, True),
        (Terminal(), {"NO_COLOR": "1"}, False),
    ],
)
def test_rich_only_on_a_terminal_without_no_color(
    stream: io.StringIO, environ: dict[str, str], rich: bool
) -> None:
    assert Display.for_stdout("table", environ=environ, stream=stream).rich is rich


def test_a_terminal_gets_colour_for_bad_rows_and_cells_are_not_markup() -> None:
    stream = Terminal()
    display = Display(format="table", rich=True, stream=stream)
    table = Table(columns=("name", "ready"))
    table.add("[bold]literal[/bold]", "False", bad=True)
    table.add("fine", "True")
    display.table(table)
    text = stream.getvalue()
    assert "[bold]literal[/bold]" in text
    assert "\x1b[" in text  # styled: a terminal


def test_json_and_yaml_are_sorted_and_say_the_same() -> None:
    payload = {"b": [1, {"z": None, "a": "x"}], "a": "é"}
    as_json = dump(payload, "json")
    assert as_json.index('"a"') < as_json.index('"b"')
    assert json.loads(as_json) == payload
    assert yaml.safe_load(dump(payload, "yaml")) == payload
    stream = io.StringIO()
    Display(format="json", stream=stream).show(payload, Table(columns=("x",)))
    assert json.loads(stream.getvalue()) == payload


def test_ages_and_sizes_for_people() -> None:
    assert age("2026-12-03T11:59:15Z", now=NOW) == "45s"
    assert age("2026-12-03T11:58:01Z", now=NOW) == "119s"
    assert age("2026-12-03T11:58:00Z", now=NOW) == "2m"
    assert age("2026-12-03T09:00:00Z", now=NOW) == "3h"
    assert age("2026-11-30T12:00:00Z", now=NOW) == "3d"
    assert age(None, now=NOW) is None
    assert human_size(None) is None
    assert human_size(512) == "512 B"
    assert human_size(3 * 1024 * 1024 // 2) == "1.5 MiB"

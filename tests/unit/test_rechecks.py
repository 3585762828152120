"""The operator's recheck intervals from its environment, and the one reader of seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from cleo_operator.core.environment import seconds_setting
from cleo_operator.failover.automatic import HEALTHY_RECHECK_SECONDS
from cleo_operator.handlers.settings import (
    DELETION_RECHECK_ENV,
    DELETION_RECHECK_SECONDS,
    HEALTHY_RECHECK_ENV,
    REFUSED_RECHECK_ENV,
    Rechecks,
)
from cleo_operator.reconcile.tenant import REFUSED_RECHECK_SECONDS


def test_without_the_variables_the_documented_defaults_hold() -> None:
    rechecks = Rechecks.from_environment({})
    assert rechecks == Rechecks()
    assert (rechecks.refused_seconds, rechecks.healthy_primary_seconds) == (20.0, 30.0)
    assert rechecks.deletion_seconds == 2.0
    assert (REFUSED_RECHECK_SECONDS, HEALTHY_RECHECK_SECONDS, DELETION_RECHECK_SECONDS) == (
        20.0,
        30.0,
        2.0,
    )


def test_each_variable_sets_its_own_interval() -> None:
    rechecks = Rechecks.from_environment(
        {REFUSED_RECHECK_ENV: "2", HEALTHY_RECHECK_ENV: " 1.5 ", DELETION_RECHECK_ENV: "0.25"}
    )
    assert rechecks == Rechecks(
        refused_seconds=2.0, healthy_primary_seconds=1.5, deletion_seconds=0.25
    )
    assert Rechecks.from_environment({HEALTHY_RECHECK_ENV: ""}) == Rechecks()


@pytest.mark.parametrize("value", ["0", "-1", "soon", "30s", "inf", "nan"])
@pytest.mark.parametrize(
    "variable", [REFUSED_RECHECK_ENV, HEALTHY_RECHECK_ENV, DELETION_RECHECK_ENV]
)
def test_a_wrong_value_is_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match="a number of seconds above 0") as refused:
        Rechecks.from_environment({variable: value})
    assert str(refused.value).startswith(f"{variable}={value!r}")


def test_seconds_setting_reads_a_number_or_keeps_the_default() -> None:
    assert seconds_setting({"X": "86400"}, "X", default=1.0) == 86400.0
    assert seconds_setting({}, "X", default=7.5) == 7.5
    with pytest.raises(ValueError, match=r"X='0': give a number of seconds above 0, e\.g\. 7\.5"):
        seconds_setting({"X": "0"}, "X", default=7.5)


def test_install_md_documents_each_variable_with_its_default() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "install.md").read_text()
    rows = {
        cells[0].strip("` "): cells[-1].strip()
        for line in doc.splitlines()
        if line.startswith("| `CLEO_") and (cells := line.strip("|").split("|"))
    }
    defaults = Rechecks()
    assert rows[REFUSED_RECHECK_ENV] == f"{defaults.refused_seconds:g}"
    assert rows[HEALTHY_RECHECK_ENV] == f"{defaults.healthy_primary_seconds:g}"
    assert rows[DELETION_RECHECK_ENV] == f"{defaults.deletion_seconds:g}"

"""The chart's README is generated from values.yaml (scripts/chart_readme.py) and never drifts."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "chart_readme", REPO / "scripts" / "chart_readme.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chart_readme"] = module
    spec.loader.exec_module(module)
    return module


chart_readme = _load()

SAMPLE = """\
# The file's header: it belongs to no key.

image:
  # Where the image is.
  # Two lines.
  repository: example/repo
  tag: ""

# Off by default.
feature:
  enabled: false
  peers:
    - namespaceSelector:
        # Inside a list item: not a value of the chart.
        matchLabels: {a: b}
  # A map left empty.
  labels: {}
"""


def test_the_committed_readme_is_what_values_yaml_says() -> None:
    assert (REPO / "charts" / "cleo-operator" / "README.md").read_text(
        encoding="utf-8"
    ) == chart_readme.expected(), (
        "charts/cleo-operator/README.md drifts from values.yaml: run "
        "`python scripts/chart_readme.py` and commit the result"
    )


def test_every_value_of_the_chart_has_a_row_with_a_description() -> None:
    values = yaml.safe_load((REPO / "charts" / "cleo-operator" / "values.yaml").read_text())
    readme = chart_readme.expected()
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    paths = [row.split("`")[1] for row in rows]
    assert paths == [path for path, _ in chart_readme.leaves(values)]
    assert "crds.install" in paths
    assert "aggregatedRoles.enabled" in paths
    for row in rows:
        assert not row.endswith("|  |"), f"no description: {row}"


def test_comments_belong_to_the_key_right_below_them() -> None:
    found = chart_readme.comments(SAMPLE)
    assert found == {
        "image.repository": "Where the image is. Two lines.",
        "feature": "Off by default.",
        "feature.peers.matchLabels": "Inside a list item: not a value of the chart.",
        "feature.labels": "A map left empty.",
    }


def test_rows_show_defaults_as_json_and_fall_back_to_the_group_or_the_schema() -> None:
    schema = {"properties": {"image": {"properties": {"tag": {"description": "The tag | x."}}}}}
    text = chart_readme.render(SAMPLE, schema)
    rows = text.split("|---|---|---|\n")[1].splitlines()
    assert rows == [
        '| `image.repository` | `"example/repo"` | Where the image is. Two lines. |',
        '| `image.tag` | `""` | The tag \\| x. |',
        "| `feature.enabled` | `false` | Off by default. |",
        '| `feature.peers` | `[{"namespaceSelector": {"matchLabels": {"a": "b"}}}]` '
        "| Off by default. |",
        "| `feature.labels` | `{}` | A map left empty. |",
    ]


def test_check_fails_on_a_drifted_readme(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "charts" / "cleo-operator" / "README.md"
    readme.parent.mkdir(parents=True)
    monkeypatch.setattr(chart_readme, "REPO", tmp_path)
    monkeypatch.setattr(chart_readme, "README", readme)
    readme.write_text(chart_readme.expected() + "| `gone` | `1` | stale |\n")
    assert chart_readme.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().out
    assert chart_readme.main([]) == 0
    assert chart_readme.main(["--check"]) == 0

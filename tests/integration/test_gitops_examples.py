"""The GitOps examples install this repository's chart with values the chart accepts.

examples/gitops/ holds an Argo CD Application and a Flux HelmRelease (with its
GitRepository). Parsed here, each must point at the chart's folder of this repository, and
its values must render with the real `helm template` (which validates them against
values.schema.json: a misspelt or retired value fails) into a Deployment running the image
the values name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_helm_template import CHART, REPO, run_helm
from tests.integration.test_helm_template import helm as helm  # noqa: PLC0414 - the fixture

EXAMPLES = REPO / "examples" / "gitops"
CHART_PATH = CHART.relative_to(REPO).as_posix()


def documents(name: str) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]
    return {d["kind"]: d for d in docs}


def argo_values() -> dict[str, Any]:
    app = documents("argocd-application.yaml")["Application"]
    assert app["apiVersion"] == "argoproj.io/v1alpha1"
    source = app["spec"]["source"]
    assert source["path"] == CHART_PATH
    assert source["repoURL"].endswith("/cleo-operator.git")
    assert set(source["helm"]) <= {"releaseName", "valuesObject"}
    values: dict[str, Any] = source["helm"]["valuesObject"]
    return values


def flux_values() -> dict[str, Any]:
    docs = documents("flux-helmrelease.yaml")
    assert set(docs) == {"GitRepository", "HelmRelease"}
    repo, release = docs["GitRepository"], docs["HelmRelease"]
    assert repo["apiVersion"] == "source.toolkit.fluxcd.io/v1"
    assert release["apiVersion"] == "helm.toolkit.fluxcd.io/v2"
    chart = release["spec"]["chart"]["spec"]
    assert chart["chart"] == f"./{CHART_PATH}"
    ref = chart["sourceRef"]
    assert (ref["kind"], ref["name"]) == ("GitRepository", repo["metadata"]["name"])
    assert ref.get("namespace", release["metadata"]["namespace"]) == repo["metadata"]["namespace"]
    assert f"!/{CHART_PATH}/" in repo["spec"]["ignore"]  # the chart is not ignored
    values: dict[str, Any] = release["spec"]["values"]
    return values


@pytest.mark.parametrize("load", [argo_values, flux_values], ids=["argocd", "flux"])
def test_the_example_renders_the_chart_with_its_image(
    helm: list[str], tmp_path: Path, load: Any
) -> None:
    values = load()
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))

    result = run_helm(helm, "template", "cleo-operator", str(CHART), "-f", str(path))

    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    deployment = next(d for d in rendered if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    image = values["image"]
    assert pod["containers"][0]["image"] == f"{image['repository']}:{image['tag']}"
    assert pod["imagePullSecrets"] == values["imagePullSecrets"]
    assert {d["kind"] for d in rendered} >= {"CustomResourceDefinition", "ClusterRole"}


def test_a_value_the_schema_does_not_know_fails_the_render(helm: list[str], tmp_path: Path) -> None:
    # What the examples' check relies on: the schema refuses unknown values.
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({**argo_values(), "imagee": {"tag": "x"}}))
    result = run_helm(helm, "template", "cleo-operator", str(CHART), "-f", str(path))
    assert result.returncode != 0
    assert "imagee" in result.stderr

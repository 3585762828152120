"""The chart's CRDs and aggregated roles as the real `helm template` renders them.

The CRD templates are generated (api/crdgen.py; tests/unit/test_crdgen.py checks the files):
here Helm itself renders them, and what comes out must be the models' CRDs exactly, with
only the release's labels and the keep annotation added, so that no template action or
YAML quirk changes a schema on the way. The values switch each part off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cleo_operator.api.crdgen import generate_crds
from tests.integration.test_helm_template import RELEASE, find, render
from tests.integration.test_helm_template import helm as helm  # noqa: PLC0414 - the fixture

CRDS = {crd["metadata"]["name"]: crd for crd in generate_crds()}
KINDS = ["cleobackups", "cleofailovers"]


def test_rendered_crds_are_the_models_crds_with_the_releases_metadata(
    helm: list[str], tmp_path: Path
) -> None:
    rendered = find(render(helm, tmp_path, {}), "CustomResourceDefinition")

    assert sorted(crd["metadata"]["name"] for crd in rendered) == sorted(CRDS)
    for crd in rendered:
        metadata = crd.pop("metadata")
        generated = CRDS[metadata["name"]]
        assert crd == {k: v for k, v in generated.items() if k != "metadata"}
        assert generated["metadata"]["labels"].items() <= metadata["labels"].items()
        assert metadata["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert metadata["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_crds_keep_false_lets_uninstall_delete_them(helm: list[str], tmp_path: Path) -> None:
    rendered = find(render(helm, tmp_path, {"crds": {"keep": False}}), "CustomResourceDefinition")
    assert len(rendered) == len(CRDS)
    assert all("annotations" not in crd["metadata"] for crd in rendered)


def test_crds_install_false_renders_none(helm: list[str], tmp_path: Path) -> None:
    assert (
        find(render(helm, tmp_path, {"crds": {"install": False}}), "CustomResourceDefinition") == []
    )


def _aggregated(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        role["metadata"]["name"]: role
        for role in find(objects, "ClusterRole")
        if any(
            k.startswith("rbac.authorization.k8s.io/aggregate-to-")
            for k in role["metadata"]["labels"]
        )
    }


def test_view_edit_and_admin_get_the_namespaced_kinds_never_tenants(
    helm: list[str], tmp_path: Path
) -> None:
    assert _aggregated(render(helm, tmp_path, {})) == {}, "aggregation is opt-in"
    roles = _aggregated(render(helm, tmp_path, {"aggregatedRoles": {"enabled": True}}))

    assert set(roles) == {f"{RELEASE}-view", f"{RELEASE}-edit"}
    view, edit = roles[f"{RELEASE}-view"], roles[f"{RELEASE}-edit"]
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k for k in view["metadata"]["labels"] if k.startswith(aggregate)} == {
        f"{aggregate}view"
    }
    assert {k for k in edit["metadata"]["labels"] if k.startswith(aggregate)} == {
        f"{aggregate}edit",
        f"{aggregate}admin",
    }
    assert view["rules"] == [
        {"apiGroups": ["cleoai.io"], "resources": KINDS, "verbs": ["get", "list", "watch"]}
    ]
    # Failovers stay read-only (edit and admin include view).
    assert edit["rules"] == [
        {
            "apiGroups": ["cleoai.io"],
            "resources": ["cleobackups"],
            "verbs": [
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        }
    ]


def test_aggregated_roles_switch_off(helm: list[str], tmp_path: Path) -> None:
    on = {"aggregatedRoles": {"enabled": True}}
    assert _aggregated(render(helm, tmp_path, {"aggregatedRoles": {"enabled": False}})) == {}
    assert _aggregated(render(helm, tmp_path, {**on, "rbac": {"create": False}})) == {}

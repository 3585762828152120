"""The copies of the operator's registry Secrets in tenant namespaces: names, what is copied,
and which sources are refused (the cluster tests prove the sync)."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from cleo_operator.render.meta import MANAGED_BY, MANAGED_BY_LABEL, TENANT_LABEL
from cleo_operator.render.pull_secrets import (
    COPY_SELECTOR,
    PULL_SECRET_TYPE,
    SOURCE_ANNOTATION,
    backup_owner_reference,
    pull_secret_copy_name,
    pull_source_problem,
    render_pull_secret_copy,
)

DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
CONFIG = base64.b64encode(json.dumps({"auths": {"registry.example": {}}}).encode()).decode()


def source(**overrides: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": PULL_SECRET_TYPE,
        "metadata": {
            "name": "regcred",
            "namespace": "cleo-system",
            "labels": {"team": "platform"},
            "annotations": {"note": "rotated monthly"},
            "resourceVersion": "42",
            "uid": "source-uid",
        },
        "data": {".dockerconfigjson": CONFIG},
        **overrides,
    }


def test_a_copy_is_named_cleo_pull_after_its_source() -> None:
    assert pull_secret_copy_name("regcred") == "cleo-pull-regcred"
    assert pull_secret_copy_name("mirror.pull") == "cleo-pull-mirror.pull"


@pytest.mark.parametrize("length", [243, 244, 253])
def test_a_long_source_name_still_gives_a_valid_distinct_copy_name(length: int) -> None:
    a, b = "a" * (length - 1) + "x", "a" * (length - 1) + "y"
    names = {pull_secret_copy_name(a), pull_secret_copy_name(b)}
    assert len(names) == 2
    for name in names:
        assert len(name) <= 253
        assert DNS_SUBDOMAIN.fullmatch(name), name
        assert name.startswith("cleo-pull-")


def test_the_copy_holds_only_the_registry_credentials_and_the_operators_labels() -> None:
    owners = [
        backup_owner_reference({"metadata": {"name": n, "uid": f"uid-{n}"}})
        for n in ("weekly", "nightly")
    ]
    copy = render_pull_secret_copy(
        source=source(),
        source_namespace="cleo-system",
        namespace="acme-prod",
        tenant="acme",
        owners=owners,
    )
    assert copy["type"] == PULL_SECRET_TYPE
    assert copy["data"] == {".dockerconfigjson": CONFIG}
    meta = copy["metadata"]
    assert meta["name"] == "cleo-pull-regcred"
    assert meta["namespace"] == "acme-prod"
    # Not the source's labels, annotations, uid or resourceVersion.
    assert meta["labels"] == {
        MANAGED_BY_LABEL: MANAGED_BY,
        TENANT_LABEL: "acme",
        "app.kubernetes.io/component": "image-pull",
    }
    assert meta["annotations"] == {SOURCE_ANNOTATION: "cleo-system/regcred"}
    assert set(meta) == {"name", "namespace", "labels", "annotations", "ownerReferences"}
    # Every backup of the namespace owns it, none controls it; sorted, so that two
    # reconciles that list the backups in another order render the same bytes.
    assert [(o["name"], o["controller"]) for o in meta["ownerReferences"]] == [
        ("nightly", False),
        ("weekly", False),
    ]
    for key, value in (part.split("=") for part in COPY_SELECTOR.split(",")):
        assert meta["labels"][key] == value


def test_registry_credentials_may_be_copied() -> None:
    assert pull_source_problem(source(), name="regcred", namespace="cleo-system") is None


@pytest.mark.parametrize(
    ("secret", "reason", "words"),
    [
        (None, "ImagePullSecretMissing", "does not exist"),
        (source(type="Opaque"), "ImagePullSecretInvalid", "is of type Opaque"),
        (source(type=None), "ImagePullSecretInvalid", "is of type Opaque"),
        (
            source(type="kubernetes.io/dockercfg", data={".dockercfg": CONFIG}),
            "ImagePullSecretInvalid",
            "is of type kubernetes.io/dockercfg",
        ),
        (source(data={}), "ImagePullSecretInvalid", "has no .dockerconfigjson"),
    ],
)
def test_anything_but_registry_credentials_is_refused_with_its_name(
    secret: dict[str, Any] | None, reason: str, words: str
) -> None:
    problem = pull_source_problem(secret, name="regcred", namespace="cleo-system")
    assert problem is not None
    assert problem[0] == reason
    assert words in problem[1]
    assert "Secret cleo-system/regcred" in problem[1]
    assert "backup.imagePullSecrets" in problem[1]
    assert CONFIG not in problem[1]

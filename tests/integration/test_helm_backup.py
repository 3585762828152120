"""The chart's `backup` values reach the backup runner, through the operator's own code.

Issue 13: a Helm install could back up nothing, because the chart never told the operator its
image, so every CronJob ran the built-in default image without pull secrets. Here the real
`helm template` renders the chart, the operator container's environment is taken from the
rendered Deployment as it is, the operator's `BackupSettings` is built from exactly that
environment (the code the operator runs at start), and `render_backup` renders a CleoBackup:
the runner's image (by digest), pull policy, pull secrets, resources, egress and security
context must be what the values say, and by default the operator's own image and pull
secrets. Misspelt or ill-typed `backup` values fail at `helm template`, naming the value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cleo_operator.api.backup import parse_backup_spec
from cleo_operator.reconcile.backup_settings import BackupSettings
from cleo_operator.render.backup import egress_problem, render_backup
from tests.integration import test_helm_template as template
from tests.integration.test_helm_template import (
    CHART,
    NAMESPACE,
    RELEASE,
    container,
    only,
    render,
    run_helm,
)
from tests.unit.render.pod_security import restricted_violations

helm = template.helm
"""The template tests' fixture: the toolchain's helm, its state in a temporary folder."""

FOUND_AT_START = ("10.96.0.1/32",)
"""What the operator finds of the API server at start when the chart names none."""
REPOSITORY = "registry.team.example/platform/cleo-operator"
DIGEST = "sha256:" + "4f" * 32
RUNNER_REPOSITORY = "mirror.team.example/cleo-operator"

VALUES: dict[str, Any] = {
    "image": {"repository": REPOSITORY, "tag": "9.9.9", "digest": DIGEST},
    "imagePullSecrets": [{"name": "operator-pull"}],
    "backup": {
        "image": {"pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}, {"name": "mirror-pull"}],
        "resources": {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"cpu": 2, "memory": "2Gi"},
        },
        "egress": {
            "apiServer": ["10.0.0.1/32", "192.0.2.10/32"],
            "objectStorage": ["10.42.7.0/24"],
        },
    },
}

SCHEDULED_S3: dict[str, Any] = {
    "tenant": "acme",
    "schedule": "0 3 * * *",
    "destination": {
        "type": "s3",
        "s3": {
            "endpoint": "https://minio.storage.svc:9000",
            "bucket": "cleo-backups",
            "credentialsSecret": "backup-s3",
        },
    },
}
ONE_OFF_PVC: dict[str, Any] = {
    "tenant": "acme",
    "destination": {"type": "pvc", "pvc": {"claimName": "backups"}},
}


def operator_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The operator container's environment as the Deployment sets it (plain values; the
    pod's own name, from the downward API, aside)."""
    env = [e for e in container(objects)["env"] if e["name"] != "POD_NAME"]
    assert all("value" in e for e in env), "the chart sets the operator's env by value"
    return {e["name"]: e["value"] for e in env}


def runner(objects: list[dict[str, Any]], raw: dict[str, Any]) -> dict[str, Any]:
    """`render_backup` of CleoBackup `raw` with the settings the operator reads from the
    chart's environment; the rendered objects by kind."""
    # As the operator starts (handlers/registry.py): the environment, then the API server's
    # address it talks to when the environment names none.
    settings = BackupSettings.from_environment(operator_env(objects))
    settings = settings.with_api_server(FOUND_AT_START)
    spec = parse_backup_spec(raw)
    rendered = render_backup(
        name="nightly",
        namespace="cleo-acme",
        uid="6a1e9d7c-1111-4b2b-8c3c-0123456789ab",
        tenant="acme",
        spec=spec,
        settings=settings.pod,
    )
    assert egress_problem(spec, settings.pod) is None
    return {obj["kind"]: obj for obj in rendered}


def pod_of(runner_objects: dict[str, Any]) -> dict[str, Any]:
    if "CronJob" in runner_objects:
        pod: dict[str, Any] = runner_objects["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]
    else:
        pod = runner_objects["Job"]["spec"]["template"]
    spec: dict[str, Any] = pod["spec"]
    return spec


def test_the_cron_job_runs_the_values_image_with_its_pull_secrets_and_resources(
    helm: list[str], tmp_path: Path
) -> None:
    objects = render(helm, tmp_path, VALUES)
    assert operator_env(objects)["CLEO_OPERATOR_NAMESPACE"] == NAMESPACE
    for raw in (SCHEDULED_S3, ONE_OFF_PVC):
        runner_objects = runner(objects, raw)
        pod = pod_of(runner_objects)
        (runner_container,) = pod["containers"]
        # The digest wins over the tag, as for the operator's own pod.
        assert runner_container["image"] == f"{REPOSITORY}@{DIGEST}"
        assert runner_container["image"] == container(objects)["image"]
        assert runner_container["imagePullPolicy"] == "Always"
        # The operator's copies of the values' Secrets in the tenant namespace (a pod can
        # only name its own namespace's Secrets).
        assert pod["imagePullSecrets"] == [
            {"name": "cleo-pull-regcred"},
            {"name": "cleo-pull-mirror-pull"},
        ]
        assert runner_container["resources"] == {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        }
        # The security context tenant namespaces enforce, as the image's user (the same
        # user the chart runs the operator as).
        assert restricted_violations(pod) == []
        chart_pod = only(objects, "Deployment", RELEASE)["spec"]["template"]["spec"]
        for key in ("runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "seccompProfile"):
            assert pod["securityContext"][key] == chart_pod["securityContext"][key], key
        assert runner_container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }
    # The runner may reach the API server (the chart's addresses, not the one found at
    # start) and the platform's object store, on the endpoint's port, and nothing else.
    egress = runner(objects, SCHEDULED_S3)["NetworkPolicy"]["spec"]["egress"]
    assert [[peer["ipBlock"]["cidr"] for peer in rule["to"]] for rule in egress] == [
        ["10.0.0.1/32", "192.0.2.10/32"],
        ["10.42.7.0/24"],
    ]
    assert egress[1]["ports"] == [{"protocol": "TCP", "port": 9000}]


def test_by_default_the_runner_is_the_operators_own_image_without_its_pull_secrets(
    helm: list[str], tmp_path: Path
) -> None:
    values = {key: VALUES[key] for key in ("image", "imagePullSecrets")}
    values["image"] = {**values["image"], "pullPolicy": "Never"}
    objects = render(helm, tmp_path, values)
    pod = pod_of(runner(objects, ONE_OFF_PVC | {"resources": {"limits": {"memory": "1Gi"}}}))
    (runner_container,) = pod["containers"]
    assert runner_container["image"] == f"{REPOSITORY}@{DIGEST}"
    assert runner_container["imagePullPolicy"] == "Never"
    # The operator's own pull secrets are never copied for the runner: tenant admins read
    # the copies (only backup.imagePullSecrets names what is copied).
    assert "imagePullSecrets" not in pod
    # No resources of the chart's: the CleoBackup's own, as it wrote them.
    assert runner_container["resources"] == {"limits": {"memory": "1Gi"}}
    # Without any value: the chart's default image at its appVersion, no pull secrets.
    bare = render(helm, tmp_path, {})
    pod = pod_of(runner(bare, ONE_OFF_PVC))
    (runner_container,) = pod["containers"]
    assert runner_container["image"] == container(bare)["image"]
    assert runner_container["image"].startswith("registry.example.com/cleoai/cleo-operator:")
    assert runner_container["imagePullPolicy"] == "IfNotPresent"
    assert "imagePullSecrets" not in pod
    assert "resources" not in runner_container


def test_a_runner_image_of_its_own_does_not_inherit_the_operators_digest(
    helm: list[str], tmp_path: Path
) -> None:
    values = {**VALUES, "backup": {"image": {"repository": RUNNER_REPOSITORY}}}
    objects = render(helm, tmp_path, values)
    (runner_container,) = pod_of(runner(objects, ONE_OFF_PVC))["containers"]
    # The operator's tag, not its digest: a digest names one image of one repository.
    assert runner_container["image"] == f"{RUNNER_REPOSITORY}:9.9.9"
    pinned = {**VALUES, "backup": {"image": {"tag": "9.9.9-debug", "digest": "sha256:" + "0" * 64}}}
    (pinned_container,) = pod_of(runner(render(helm, tmp_path, pinned), ONE_OFF_PVC))["containers"]
    assert pinned_container["image"] == f"{REPOSITORY}@sha256:{'0' * 64}"


BAD_BACKUP_VALUES: list[tuple[str, list[str], str]] = [
    ("misspelt key", ["--set", "backup.imagePullSecret[0].name=x"], "imagePullSecret"),
    ("pull policy", ["--set", "backup.image.pullPolicy=Sometimes"], "/backup/image/pullPolicy"),
    ("digest", ["--set", "backup.image.digest=latest"], "/backup/image/digest"),
    ("pull secret name", ["--set-json", 'backup.imagePullSecrets=[{"nam":"x"}]'], "nam"),
    (
        "quantity",
        ["--set", "backup.resources.limits.memory=lots"],
        "/backup/resources/limits/memory",
    ),
    ("resource kind", ["--set", "backup.resources.limits.gpu=1"], "gpu"),
    (
        "every address",
        ["--set", "backup.egress.apiServer[0]=0.0.0.0/0"],
        "/backup/egress/apiServer/0",
    ),
    (
        "a host name",
        ["--set", "backup.egress.objectStorage[0]=s3.amazonaws.com"],
        "/backup/egress/objectStorage/0",
    ),
    ("egress not a list", ["--set", "backup.egress.apiServer=10.0.0.1/32"], "/backup/egress"),
]


@pytest.mark.parametrize(
    ("args", "names"),
    [(a, n) for _, a, n in BAD_BACKUP_VALUES],
    ids=[i for i, _, _ in BAD_BACKUP_VALUES],
)
def test_bad_backup_values_fail_naming_the_value(
    helm: list[str], args: list[str], names: str
) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), *args)
    assert result.returncode != 0, f"helm accepted {args}"
    assert names in result.stderr, result.stderr

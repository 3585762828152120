"""What a CleoBackup renders to: the runner's identity, rights, network path and schedule.

The pod spec is checked with the independent Pod Security checker, its command line with
the real CLI parser (so a renamed option fails here, not in a cluster at 3 a.m.), and its
destination with the real storage parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
from typing import Any

import pytest

from cleo_operator.api.backup import NAME_MAX_LENGTH, parse_backup_spec
from cleo_operator.api.base import ResourceRequirements as RunnerResources
from cleo_operator.api.errors import SpecError
from cleo_operator.api.objects import KubeObject
from cleo_operator.backup.commands import storage_from_destination
from cleo_operator.backup.object_store import ObjectStoreStorage
from cleo_operator.backup.storage import LocalStorage
from cleo_operator.cli import backup as backup_cli
from cleo_operator.kube.apply import needs_apply, with_hash
from cleo_operator.render.backup import (
    BACKUP_LABEL,
    DATABASE_ENV,
    KEYRING_MOUNT,
    ONE_OFF_DEADLINE_SECONDS,
    TERMINATION_LOG,
    VOLUME_MOUNT,
    BackupObjects,
    BackupPodSettings,
    backup_destination,
    egress_problem,
    render_backup,
    render_cron_job,
    s3_egress_cidrs,
    with_kept_traceparent,
)
from tests.unit.render.pod_security import restricted_violations

NAME = "nightly"
NS = "cleo-acme"
UID = "6a1e9d7c-1111-4b2b-8c3c-0123456789ab"
IMAGE = "registry.example/cleo-operator:1.2.3"
SETTINGS = BackupPodSettings(image=IMAGE)

PVC_SPEC: dict[str, Any] = {
    "tenant": "acme",
    "schedule": "0 3 * * *",
    "timeZone": "Europe/Berlin",
    "destination": {"type": "pvc", "pvc": {"claimName": "backups", "path": "cleo/acme"}},
    "retention": {"keepDaily": 7},
    "concurrencyPolicy": "Forbid",
    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    "historyLimit": 5,
}
S3_SPEC: dict[str, Any] = {
    "tenant": "acme",
    "schedule": "@hourly",
    "suspend": True,
    "concurrencyPolicy": "Replace",
    "destination": {
        "type": "s3",
        "s3": {
            "endpoint": "http://minio.storage.svc:9000",
            "bucket": "cleo-backups",
            "prefix": "tenants/acme",
            "region": "eu-west-1",
            "credentialsSecret": "backup-s3",
        },
    },
}
ONE_OFF: dict[str, Any] = {
    "tenant": "acme",
    "destination": {"type": "pvc", "pvc": {"claimName": "backups"}},
}


def rendered(
    raw: dict[str, Any], settings: BackupPodSettings = SETTINGS, *, name: str = NAME
) -> list[KubeObject]:
    """`render_backup` of CleoBackup `name` of tenant acme, in apply order."""
    objects = render_backup(
        name=name,
        namespace=NS,
        uid=UID,
        tenant="acme",
        spec=parse_backup_spec(raw),
        settings=settings,
    )
    return list(objects)


def render(raw: dict[str, Any], settings: BackupPodSettings = SETTINGS) -> dict[str, KubeObject]:
    return {obj["kind"]: obj for obj in rendered(raw, settings)}


def pod_spec(raw: dict[str, Any], settings: BackupPodSettings = SETTINGS) -> dict[str, Any]:
    objects = render(raw, settings)
    if "CronJob" in objects:
        spec: dict[str, Any] = objects["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    else:
        spec = objects["Job"]["spec"]["template"]["spec"]
    return spec


def container(raw: dict[str, Any], settings: BackupPodSettings = SETTINGS) -> dict[str, Any]:
    containers = pod_spec(raw, settings)["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def env_of(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container(raw)["env"]}


# --- what is rendered, named and owned how ---------------------------------------------------


def test_a_scheduled_backup_renders_its_identity_rights_network_and_cron_job() -> None:
    objects = render_backup(
        name=NAME,
        namespace=NS,
        uid=UID,
        tenant="acme",
        spec=parse_backup_spec(PVC_SPEC),
        settings=SETTINGS,
    )
    assert objects.runner["kind"] == "CronJob"
    assert [o["kind"] for o in objects.before_runner] == [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
    ]
    # Identity and rights first: the runner's pods must never start before their Role.
    kinds = [o["kind"] for o in objects]
    assert kinds == ["ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "CronJob"]
    for obj in objects:
        meta = obj["metadata"]
        assert meta["name"] == f"cleo-backup-{NAME}"
        assert meta["namespace"] == NS
        assert meta["labels"][BACKUP_LABEL] == NAME
        assert meta["labels"]["cleoai.io/tenant"] == "acme"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "cleo-operator"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "cleoai.io/v1alpha1",
                "kind": "CleoBackup",
                "name": NAME,
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_a_one_off_backup_renders_a_job_that_retries_and_no_cron_job() -> None:
    objects = render(ONE_OFF)
    assert "CronJob" not in objects
    job = objects["Job"]
    assert job["spec"]["backoffLimit"] == 2
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    with pytest.raises(ValueError, match=r"spec\.schedule"):
        render_cron_job(
            name=NAME,
            namespace=NS,
            uid=UID,
            tenant="acme",
            spec=parse_backup_spec(ONE_OFF),
            settings=SETTINGS,
        )


def test_the_cron_job_carries_the_schedule_and_its_policies() -> None:
    cron = render(PVC_SPEC)["CronJob"]["spec"]
    assert cron["schedule"] == "0 3 * * *"
    assert cron["timeZone"] == "Europe/Berlin"
    assert cron["suspend"] is False
    assert cron["concurrencyPolicy"] == "Forbid"
    assert cron["startingDeadlineSeconds"] == 600
    # The next scheduled run is the retry: a failed pod is not run again by the Job.
    assert cron["jobTemplate"]["spec"]["backoffLimit"] == 0
    assert cron["successfulJobsHistoryLimit"] == 3
    assert cron["failedJobsHistoryLimit"] == 3
    assert cron["jobTemplate"]["metadata"]["labels"][BACKUP_LABEL] == NAME

    other = render(S3_SPEC)["CronJob"]["spec"]
    assert other["schedule"] == "@hourly"
    assert "timeZone" not in other  # unset: the controller's default, never null
    assert other["suspend"] is True
    assert other["concurrencyPolicy"] == "Replace"


def test_job_history_never_exceeds_the_status_history() -> None:
    cron = render({**PVC_SPEC, "historyLimit": 1})["CronJob"]["spec"]
    assert cron["successfulJobsHistoryLimit"] == 1
    assert cron["failedJobsHistoryLimit"] == 1


def test_the_longest_name_fits_the_cron_job_limit() -> None:
    longest = "b" * NAME_MAX_LENGTH
    objects = rendered(PVC_SPEC, name=longest)
    # A CronJob's name may have 52 characters (its Jobs add 11).
    assert all(len(o["metadata"]["name"]) <= 52 for o in objects)


# --- rights ----------------------------------------------------------------------------------


def test_the_role_lets_the_runner_read_its_backup_and_patch_its_status_only() -> None:
    objects = render(S3_SPEC)
    rules = objects["Role"]["rules"]
    granted = {
        (group, resource, verb, tuple(rule["resourceNames"]))
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {
        ("cleoai.io", "cleobackups", "get", (NAME,)),
        ("cleoai.io", "cleobackups/status", "patch", (NAME,)),
    }
    # No Secret rights: the kubelet hands the pod its Secrets, the API need not.
    assert not any("secrets" in rule["resources"] for rule in rules)
    # A one-off made with spec.from may read the CleoBackup it runs too, write nothing more.
    one_off = render_backup(
        name="now-1",
        namespace=NS,
        uid=UID,
        tenant="acme",
        spec=parse_backup_spec(ONE_OFF),
        settings=SETTINGS,
        source=NAME,
    )
    assert one_off.role["rules"] == [
        {
            "apiGroups": ["cleoai.io"],
            "resources": ["cleobackups"],
            "resourceNames": ["now-1", NAME],
            "verbs": ["get"],
        },
        {
            "apiGroups": ["cleoai.io"],
            "resources": ["cleobackups/status"],
            "resourceNames": ["now-1"],
            "verbs": ["patch"],
        },
    ]
    binding = objects["RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": f"cleo-backup-{NAME}",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"cleo-backup-{NAME}", "namespace": NS}
    ]


def test_only_the_runner_pods_get_an_api_token() -> None:
    objects = render(PVC_SPEC)
    assert objects["ServiceAccount"]["automountServiceAccountToken"] is False
    pod = pod_spec(PVC_SPEC)
    assert pod["serviceAccountName"] == f"cleo-backup-{NAME}"
    assert pod["automountServiceAccountToken"] is True


# --- the pod ---------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [PVC_SPEC, S3_SPEC, ONE_OFF], ids=["pvc", "s3", "one-off"])
def test_the_runner_pod_passes_the_restricted_profile(raw: dict[str, Any]) -> None:
    pod = pod_spec(raw)
    assert restricted_violations(pod) == []
    sc = container(raw)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m for m in container(raw)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    # pg_dump and pg_restore need a writable /tmp on a read-only root filesystem.
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"] == {}


def test_the_command_is_what_the_cli_accepts() -> None:
    command = container(PVC_SPEC)["command"]
    assert command[0] == "cleo-operator"
    parser = argparse.ArgumentParser(prog="cleo-operator")
    backup_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(command[1:])
    assert args.backup == f"{NS}/{NAME}"
    assert args.destination == f"{VOLUME_MOUNT}/cleo/acme"
    assert str(args.keyring_dir) == KEYRING_MOUNT
    assert str(args.report) == TERMINATION_LOG
    assert container(PVC_SPEC)["terminationMessagePath"] == TERMINATION_LOG


def test_the_image_is_the_operators_own() -> None:
    assert container(PVC_SPEC)["image"] == IMAGE
    assert "imagePullPolicy" not in container(PVC_SPEC)
    pinned = BackupPodSettings(image=IMAGE, image_pull_policy="IfNotPresent")
    assert container(PVC_SPEC, pinned)["imagePullPolicy"] == "IfNotPresent"


def test_the_database_login_comes_from_the_tenant_secret_by_reference() -> None:
    env = env_of(PVC_SPEC)
    for key in DATABASE_ENV:
        assert env[key]["valueFrom"] == {"secretKeyRef": {"name": "cleo-database", "key": key}}
    # Never a literal value for anything secret; DATABASE_URL (the password again) not at all.
    assert "DATABASE_URL" not in env
    assert all("value" not in item for item in env.values())
    assert env["CLEO_JOB_NAME"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}
    }
    renamed = BackupPodSettings(image=IMAGE, database_secret="db-login")
    pod_env = {item["name"]: item for item in container(PVC_SPEC, renamed)["env"]}
    assert pod_env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "db-login"


def test_the_keyring_is_mounted_read_only_and_private() -> None:
    pod = pod_spec(PVC_SPEC)
    mounts = {m["mountPath"]: m for m in container(PVC_SPEC)["volumeMounts"]}
    keyring = mounts[KEYRING_MOUNT]
    assert keyring["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == keyring["name"])
    assert volume["secret"] == {"secretName": "cleo-keyring", "defaultMode": 0o440}


def test_a_volume_destination_is_mounted_and_named_on_the_command_line() -> None:
    pod = pod_spec(PVC_SPEC)
    mounts = {m["mountPath"]: m for m in container(PVC_SPEC)["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[VOLUME_MOUNT]["name"])
    assert volume["persistentVolumeClaim"] == {"claimName": "backups"}
    storage = storage_from_destination(
        backup_destination(parse_backup_spec(PVC_SPEC)), volume_mount=VOLUME_MOUNT
    )
    assert isinstance(storage, LocalStorage)
    assert str(storage.root) == f"{VOLUME_MOUNT}/cleo/acme"
    assert backup_destination(parse_backup_spec(ONE_OFF)) == VOLUME_MOUNT


def test_an_s3_destination_gets_its_credentials_and_no_volume() -> None:
    env = env_of(S3_SPEC)
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "backup-s3",
        "key": "AWS_ACCESS_KEY_ID",
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "backup-s3"
    # A session token is optional: a Secret without one must not keep the pod from starting.
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    mounts = [m["mountPath"] for m in container(S3_SPEC)["volumeMounts"]]
    assert VOLUME_MOUNT not in mounts
    destination = backup_destination(parse_backup_spec(S3_SPEC))
    storage = storage_from_destination(
        destination, environ={"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}
    )
    assert isinstance(storage, ObjectStoreStorage)
    config = storage.store.config
    assert (config["bucket"], storage.store.prefix, config["region"], config["endpoint"]) == (
        "cleo-backups",
        "tenants/acme",
        "eu-west-1",
        "http://minio.storage.svc:9000",
    )


def test_resources_come_from_the_spec_and_are_left_out_when_unset() -> None:
    assert container(PVC_SPEC)["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert "resources" not in container(ONE_OFF)


def test_the_pods_are_not_labelled_as_the_operators_children() -> None:
    labels = render(PVC_SPEC)["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert "app.kubernetes.io/managed-by" not in labels
    assert labels[BACKUP_LABEL] == NAME


# --- network ---------------------------------------------------------------------------------


API = BackupPodSettings(image=IMAGE, api_server_cidrs=("10.0.0.1/32", "192.0.2.10/32"))


def _s3(**s3: Any) -> dict[str, Any]:
    base = S3_SPEC["destination"]["s3"]
    return {**S3_SPEC, "destination": {"type": "s3", "s3": {**base, **s3}}}


# Before issue 11 this test asserted egress to 0.0.0.0/0 and ::/0 on 443, 6443 and the S3
# port by default. Egress now goes only to named destinations.
def test_the_network_policy_opens_egress_for_the_runner_pods_only() -> None:
    objects = render(_s3(egress=["203.0.113.0/24", "2001:db8::/48"]), API)
    policy = objects["NetworkPolicy"]["spec"]
    assert policy["policyTypes"] == ["Egress"]
    selector = policy["podSelector"]["matchLabels"]
    pod_labels = objects["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert selector[BACKUP_LABEL] == NAME
    api, store = policy["egress"]
    # The API server (443 via its Service, 6443 behind it), at its addresses only.
    assert api["to"] == [
        {"ipBlock": {"cidr": "10.0.0.1/32"}},
        {"ipBlock": {"cidr": "192.0.2.10/32"}},
    ]
    assert api["ports"] == [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]
    # The object store, at the ranges the CleoBackup names, on the endpoint's own port.
    assert store["to"] == [
        {"ipBlock": {"cidr": "203.0.113.0/24"}},
        {"ipBlock": {"cidr": "2001:db8::/48"}},
    ]
    assert store["ports"] == [{"protocol": "TCP", "port": 9000}]
    assert egress_problem(parse_backup_spec(_s3(egress=["203.0.113.0/24"])), API) is None


def test_no_rule_ever_opens_every_address() -> None:
    for raw in (PVC_SPEC, S3_SPEC, _s3(egress=["203.0.113.0/24"]), _s3(endpoint=None)):
        for settings in (SETTINGS, API):
            for rule in render(raw, settings)["NetworkPolicy"]["spec"]["egress"]:
                for peer in rule["to"]:
                    assert not peer["ipBlock"]["cidr"].endswith("/0"), (raw, peer)


def test_a_pvc_destination_opens_only_the_api_server() -> None:
    (api,) = render(PVC_SPEC, API)["NetworkPolicy"]["spec"]["egress"]
    assert [p["ipBlock"]["cidr"] for p in api["to"]] == ["10.0.0.1/32", "192.0.2.10/32"]
    assert egress_problem(parse_backup_spec(PVC_SPEC), API) is None


def test_an_ip_address_endpoint_is_its_own_destination() -> None:
    raw = _s3(endpoint="https://198.51.100.7:9443")
    (_, store) = render(raw, API)["NetworkPolicy"]["spec"]["egress"]
    assert store == {
        "to": [{"ipBlock": {"cidr": "198.51.100.7/32"}}],
        "ports": [{"protocol": "TCP", "port": 9443}],
    }
    six = _s3(endpoint="https://[2001:db8::7]")
    (_, store6) = render(six, API)["NetworkPolicy"]["spec"]["egress"]
    assert store6["to"] == [{"ipBlock": {"cidr": "2001:db8::7/128"}}]
    assert store6["ports"] == [{"protocol": "TCP", "port": 443}]
    assert s3_egress_cidrs(parse_backup_spec(raw)) == ("198.51.100.7/32",)


def test_an_s3_store_by_name_without_egress_gets_no_rule_and_a_problem_naming_the_field() -> None:
    for raw in (S3_SPEC, _s3(endpoint=None)):
        (api,) = render(raw, API)["NetworkPolicy"]["spec"]["egress"]
        assert [p["port"] for p in api["ports"]] == [443, 6443]
        problem = egress_problem(parse_backup_spec(raw), API)
        assert problem is not None
        assert problem.startswith("spec.destination.s3.egress:")
    assert "'http://minio.storage.svc:9000' is a name" in (
        egress_problem(parse_backup_spec(S3_SPEC), API) or ""
    )


def test_unknown_api_server_addresses_are_a_problem_not_a_wide_rule() -> None:
    assert render(PVC_SPEC)["NetworkPolicy"]["spec"]["egress"] == []
    problem = egress_problem(parse_backup_spec(PVC_SPEC), SETTINGS)
    assert problem is not None
    assert "CLEO_BACKUP_API_SERVER_CIDRS" in problem


@pytest.mark.parametrize("bad", ["every", "10.0.0.0/99", "2001:db8::/200"])
def test_s3_egress_must_be_address_ranges(bad: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_backup_spec(_s3(egress=[bad]))
    assert "spec.destination.s3.egress[0]" in str(caught.value)


# --- stable output ---------------------------------------------------------------------------


def test_rendering_does_not_share_mutable_state() -> None:
    first = render(PVC_SPEC)
    first["CronJob"]["metadata"]["labels"]["x"] = "y"
    first["CronJob"]["metadata"]["ownerReferences"][0]["uid"] = "changed"
    second = render(PVC_SPEC)
    assert "x" not in second["CronJob"]["metadata"]["labels"]
    assert second["CronJob"]["metadata"]["ownerReferences"][0]["uid"] == UID


# --- what the operator's settings add to every runner ----------------------------------------


def test_pull_secrets_go_on_every_runner_pod_and_nowhere_by_default() -> None:
    pulling = BackupPodSettings(image=IMAGE, image_pull_secrets=("regcred", "mirror"))
    for raw in (PVC_SPEC, ONE_OFF):
        assert pod_spec(raw, pulling)["imagePullSecrets"] == [
            {"name": "regcred"},
            {"name": "mirror"},
        ]
        # An empty list would be dropped by the API server and then look like drift.
        assert "imagePullSecrets" not in pod_spec(raw)


def test_the_operators_resources_apply_to_backups_that_set_none_and_never_mix() -> None:
    defaults = RunnerResources.model_validate(
        {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": 2, "memory": "2Gi"}}
    )
    settings = BackupPodSettings(image=IMAGE, resources=defaults)
    assert container(ONE_OFF, settings)["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    # The CleoBackup's own resources replace the operator's whole: its 1Gi limit must not
    # meet the operator's 512Mi request half way (or its request the operator's limit).
    assert container(PVC_SPEC, settings)["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert "resources" not in container(ONE_OFF)


def test_the_platforms_object_store_ranges_open_s3_runners_only() -> None:
    platform = BackupPodSettings(
        image=IMAGE, api_server_cidrs=("10.0.0.1/32",), object_store_cidrs=("10.42.7.0/24",)
    )
    spec = parse_backup_spec(S3_SPEC)  # a store by host name, no egress of its own
    assert egress_problem(spec, platform) is None
    (_, store) = render(S3_SPEC, platform)["NetworkPolicy"]["spec"]["egress"]
    assert store == {
        "to": [{"ipBlock": {"cidr": "10.42.7.0/24"}}],
        "ports": [{"protocol": "TCP", "port": 9000}],
    }
    both = render(_s3(egress=["203.0.113.0/24"]), platform)["NetworkPolicy"]["spec"]["egress"]
    assert [p["ipBlock"]["cidr"] for p in both[1]["to"]] == ["10.42.7.0/24", "203.0.113.0/24"]
    # A volume destination needs no object store: only the API server's rule.
    (api,) = render(PVC_SPEC, platform)["NetworkPolicy"]["spec"]["egress"]
    assert api["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]


def test_a_spec_with_from_is_resolved_before_it_is_rendered() -> None:
    with pytest.raises(ValueError, match=r"spec\.from must be resolved"):
        rendered({"tenant": "acme", "from": NAME}, name="now-1")


# --- one-offs made with spec.from ---------------------------------------------------------------

IRSA_SOURCE: dict[str, Any] = {
    "tenant": "acme",
    "schedule": "*/5 * * * *",
    "destination": {
        "type": "s3",
        "s3": {
            "endpoint": "https://10.0.0.5:9000",
            "bucket": "platform-backups",
            "egress": ["10.0.0.5/32"],
            "workloadIdentity": {"roleArn": "arn:aws:iam::123456789012:role/cleo-backup"},
        },
    },
}


def from_one_off(
    name: str, raw: dict[str, Any] = ONE_OFF, settings: BackupPodSettings = SETTINGS
) -> BackupObjects:
    """What the reconciler renders for `name` = {tenant: acme, from: nightly}, resolved."""
    where = {"name": name, "namespace": NS, "uid": UID, "tenant": "acme"}
    return render_backup(**where, spec=parse_backup_spec(raw), settings=settings, source=NAME)


def _cron_job_names(cron_job: str, start: datetime.datetime, minutes: int) -> set[str]:
    """The Job names the CronJob controller gives `cron_job`'s runs: ``<name>-<unix minutes>``."""
    first = int(start.timestamp()) // 60
    return {f"{cron_job}-{first + m}" for m in range(minutes)}


@pytest.mark.security
def test_a_one_offs_objects_never_take_a_cron_jobs_job_name() -> None:
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    scheduled = render(PVC_SPEC)["CronJob"]["metadata"]["name"]
    taken = _cron_job_names(scheduled, start, 60)
    # A one-off named after the next scheduled run of nightly, as an attacker would.
    for name in sorted(taken)[:3]:
        one_off = from_one_off(name.removeprefix("cleo-backup-"))
        names = {obj["metadata"]["name"] for obj in one_off}
        assert names == {f"cleo-run-{name.removeprefix('cleo-backup-')}"}
        assert not names & taken
        assert all(not n.startswith("cleo-backup-") for n in names)
    # The longest name a CleoBackup may have still fits a Job's name (63 characters).
    longest = from_one_off("x" * 40)
    assert len(longest.runner["metadata"]["name"]) <= 63


@pytest.mark.security
def test_a_one_offs_pods_run_as_its_sources_service_account_and_get_no_identity() -> None:
    resolved = {k: v for k, v in IRSA_SOURCE.items() if k != "schedule"}
    one_off = from_one_off("now-1", raw=resolved)
    assert one_off.service_account is None
    assert "ServiceAccount" not in {obj["kind"] for obj in one_off}
    pod = one_off.runner["spec"]["template"]["spec"]
    # The cloud's trust names cleo-backup-<source>: the one-off uses that identity as is.
    assert pod["serviceAccountName"] == f"cleo-backup-{NAME}"
    assert one_off.role_binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"cleo-backup-{NAME}", "namespace": NS}
    ]
    assert one_off.role_binding["roleRef"]["name"] == "cleo-run-now-1"
    # Its own Role: get the one-off and its source, write the one-off's status only.
    assert one_off.role["metadata"]["name"] == "cleo-run-now-1"
    assert [r["resourceNames"] for r in one_off.role["rules"]] == [["now-1", NAME], ["now-1"]]
    # The scheduled source's pods run as the same account, which is annotated for IRSA.
    source = render(IRSA_SOURCE)
    assert source["ServiceAccount"]["metadata"]["name"] == pod["serviceAccountName"]
    assert "eks.amazonaws.com/role-arn" in source["ServiceAccount"]["metadata"]["annotations"]


@pytest.mark.security
def test_a_one_offs_job_has_a_deadline_and_other_jobs_none() -> None:
    one_off = from_one_off("now-1")
    assert one_off.runner["spec"]["activeDeadlineSeconds"] == ONE_OFF_DEADLINE_SECONDS
    shorter = dataclasses.replace(SETTINGS, one_off_deadline_seconds=600)
    job = from_one_off("now-1", settings=shorter).runner
    assert job["spec"]["activeDeadlineSeconds"] == 600
    # A platform's one-off of its own (and the final backup) has no deadline.
    assert "activeDeadlineSeconds" not in render(ONE_OFF)["Job"]["spec"]


# -- trace context -------------------------------------------------------------------------


def _env_names(obj: KubeObject) -> list[str]:
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    return [e["name"] for e in container["env"]]


TRACE_ENV = (
    ("OTEL_TRACES_EXPORTER", "otlp"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces"),
    ("TRACEPARENT", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
)


def test_the_runner_gets_trace_variables_only_when_given_last_in_its_env() -> None:
    spec = parse_backup_spec(PVC_SPEC)
    ids = {"name": NAME, "namespace": NS, "uid": UID, "tenant": "acme"}
    plain = render_cron_job(**ids, spec=spec, settings=SETTINGS)
    assert not [n for n in _env_names(plain) if n.startswith("OTEL_") or n == "TRACEPARENT"]
    traced = render_cron_job(
        **ids, spec=spec, settings=dataclasses.replace(SETTINGS, trace_env=TRACE_ENV)
    )
    assert _env_names(traced) == _env_names(plain) + [k for k, _ in TRACE_ENV]
    one_off = render_backup(
        **ids,
        spec=parse_backup_spec(ONE_OFF),
        settings=dataclasses.replace(SETTINGS, trace_env=TRACE_ENV),
    ).runner
    assert _env_names(one_off)[-1] == "TRACEPARENT"


def test_a_runner_is_compared_with_the_traceparent_it_has() -> None:
    spec = parse_backup_spec(PVC_SPEC)
    ids = {"name": NAME, "namespace": NS, "uid": UID, "tenant": "acme"}

    def cron(parent: str | None) -> KubeObject:
        env = TRACE_ENV[:2] + ((("TRACEPARENT", parent),) if parent else ())
        settings = dataclasses.replace(SETTINGS, trace_env=env)
        return render_cron_job(**ids, spec=spec, settings=settings)

    live = with_hash(cron("00-" + "1" * 32 + "-" + "2" * 16 + "-01"))
    fresh = cron("00-" + "3" * 32 + "-" + "4" * 16 + "-01")
    assert needs_apply(with_hash(fresh), live)  # a new trace id alone would rewrite it
    assert not needs_apply(with_hash(with_kept_traceparent(fresh, live)), live)
    # Not sampled this time (no TRACEPARENT): the live one is still kept.
    assert not needs_apply(with_hash(with_kept_traceparent(cron(None), live)), live)
    # Made by a reconcile that was not sampled: no trace id to keep, and none forced on it.
    unsampled = with_hash(cron(None))
    assert not needs_apply(with_hash(with_kept_traceparent(fresh, unsampled)), unsampled)
    # Made while tracing was off: tracing's variables (and this trace) go out now.
    untraced = with_hash(render_cron_job(**ids, spec=spec, settings=SETTINGS))
    assert needs_apply(with_hash(with_kept_traceparent(fresh, untraced)), untraced)
    # Comparing never changes what is written.
    assert _env_names(fresh)[-1] == "TRACEPARENT"

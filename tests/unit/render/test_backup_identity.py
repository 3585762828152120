"""How a backup runner reaches each object store: Secret keys, workload identity, metadata."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cleo_operator.api.backup import parse_backup_spec
from cleo_operator.backup.commands import storage_from_destination
from cleo_operator.backup.object_store import ObjectStoreStorage
from cleo_operator.backup.object_stores import (
    CredentialsUnavailable,
    decoded_secret,
    secret_environ,
    service_account_key_problem,
)
from cleo_operator.render.backup import backup_destination
from cleo_operator.render.backup_identity import AWS_TOKEN_PATH
from tests.unit.test_render_backup import (
    API,
    S3_SPEC,
    container,
    pod_spec,
    render,
)

ROLE = "arn:aws:iam::123456789012:role/cleo-backup"
GSA = "cleo-backup@acme-prod.iam.gserviceaccount.com"
CLIENT = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
TENANT_ID = "11111111-2222-3333-4444-555555555555"


def s3(**block: Any) -> dict[str, Any]:
    base = {k: v for k, v in S3_SPEC["destination"]["s3"].items() if k != "credentialsSecret"}
    return {**S3_SPEC, "destination": {"type": "s3", "s3": {**base, **block}}}


def gcs(**block: Any) -> dict[str, Any]:
    return {
        **S3_SPEC,
        "destination": {
            "type": "gcs",
            "gcs": {
                "bucket": "cleo-backups",
                "prefix": "acme",
                "egress": ["199.36.153.8/30"],
                **block,
            },
        },
    }


def azure(**block: Any) -> dict[str, Any]:
    return {
        **S3_SPEC,
        "destination": {
            "type": "azure",
            "azure": {
                "account": "cleobackups",
                "container": "tenant-acme",
                "egress": ["20.60.0.0/16"],
                **block,
            },
        },
    }


def env(raw: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(raw, API)["env"]}


def egress(raw: dict[str, Any]) -> list[tuple[list[str], list[int]]]:
    rules = render(raw, API)["NetworkPolicy"]["spec"]["egress"]
    return [
        ([p["ipBlock"]["cidr"] for p in r["to"]], [p["port"] for p in r["ports"]]) for r in rules
    ]


def test_irsa_annotates_the_service_account_and_projects_the_sts_token() -> None:
    raw = s3(workloadIdentity={"roleArn": ROLE}, egress=["52.94.0.0/16"])
    objects = render(raw, API)
    assert objects["ServiceAccount"]["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": ROLE
    }
    variables = env(raw)
    assert variables["AWS_ROLE_ARN"] == ROLE
    assert variables["AWS_WEB_IDENTITY_TOKEN_FILE"] == AWS_TOKEN_PATH
    assert "AWS_ACCESS_KEY_ID" not in variables
    pod = pod_spec(raw, API)
    (token,) = [v for v in pod["volumes"] if v["name"] == "aws-iam-token"]
    assert token["projected"]["sources"] == [
        {
            "serviceAccountToken": {
                "audience": "sts.amazonaws.com",
                "expirationSeconds": 86400,
                "path": "token",
            }
        }
    ]
    mounts = {m["name"]: m for m in container(raw, API)["volumeMounts"]}
    assert AWS_TOKEN_PATH.startswith(mounts["aws-iam-token"]["mountPath"] + "/")
    assert mounts["aws-iam-token"]["readOnly"] is True
    # The store is on 9000; STS answers on 443 in the ranges the CleoBackup names.
    assert (["52.94.0.0/16"], [443, 9000]) in egress(raw)
    # A private STS reaches the runner as AWS_ENDPOINT_URL_STS.
    private = s3(workloadIdentity={"roleArn": ROLE, "stsEndpoint": "https://sts.internal"})
    assert env({**private})["AWS_ENDPOINT_URL_STS"] == "https://sts.internal"


def test_a_credentials_secret_gives_static_keys_and_no_identity() -> None:
    raw = s3(credentialsSecret="backup-s3", egress=["52.94.0.0/16"])
    variables = env(raw)
    assert variables["AWS_ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": "backup-s3", "key": "AWS_ACCESS_KEY_ID"}
    }
    assert "annotations" not in render(raw, API)["ServiceAccount"]["metadata"]
    assert not [v for v in pod_spec(raw, API)["volumes"] if "projected" in v]
    assert egress(raw)[-1] == (["52.94.0.0/16"], [9000])


def test_gke_workload_identity_opens_the_metadata_server_only() -> None:
    raw = gcs(workloadIdentity={"serviceAccount": GSA})
    assert render(raw, API)["ServiceAccount"]["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": GSA
    }
    assert not [e for e in env(raw) if e.startswith("GOOGLE_")]
    rules = egress(raw)
    assert (["199.36.153.8/30"], [443]) in rules
    assert (["169.254.169.254/32"], [80]) in rules
    assert (["169.254.169.252/32"], [988]) in rules
    assert backup_destination(parse_backup_spec(raw)) == "gs://cleo-backups/acme"


def test_a_gcs_key_secret_reaches_the_runner_as_its_json() -> None:
    raw = gcs(credentialsSecret="backup-gcs")
    assert env(raw)["GOOGLE_SERVICE_ACCOUNT_KEY"] == {
        "secretKeyRef": {"name": "backup-gcs", "key": "service-account.json"}
    }
    # No metadata address without an identity that needs it.
    assert all("169.254" not in cidr for cidrs, _ in egress(raw) for cidr in cidrs)


def test_azure_workload_identity_labels_the_pod_for_the_webhook() -> None:
    raw = azure(workloadIdentity={"clientId": CLIENT, "tenantId": TENANT_ID})
    assert render(raw, API)["ServiceAccount"]["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": CLIENT,
        "azure.workload.identity/tenant-id": TENANT_ID,
    }
    template = render(raw, API)["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert (["20.60.0.0/16"], [443]) in egress(raw)
    assert backup_destination(parse_backup_spec(raw)) == "azure://cleobackups/tenant-acme/"


def test_instance_metadata_is_opened_only_when_asked_for() -> None:
    raw = azure(instanceMetadata=True)
    assert (["169.254.169.254/32"], [80]) in egress(raw)
    keyed = azure(credentialsSecret="backup-azure")
    assert all("169.254" not in cidr for cidrs, _ in egress(keyed) for cidr in cidrs)
    assert env(keyed)["AZURE_STORAGE_SAS_TOKEN"] == {
        "secretKeyRef": {"name": "backup-azure", "key": "AZURE_STORAGE_SAS_TOKEN", "optional": True}
    }


def test_the_runner_builds_its_store_from_the_rendered_destination() -> None:
    spec = parse_backup_spec(
        azure(endpoint="https://cleobackups.blob.core.chinacloudapi.cn", credentialsSecret="k")
    )
    storage = storage_from_destination(
        backup_destination(spec), environ={"AZURE_STORAGE_ACCOUNT_KEY": "a2V5"}
    )
    assert isinstance(storage, ObjectStoreStorage)
    assert storage.description.endswith("at https://cleobackups.blob.core.chinacloudapi.cn")


@pytest.mark.parametrize(
    ("raw", "data", "reason", "message"),
    [
        (s3(credentialsSecret="k"), None, "S3CredentialsMissing", "does not exist"),
        (s3(credentialsSecret="k"), {"AWS_ACCESS_KEY_ID": "x"}, "S3CredentialsMissing", "lacks"),
        (gcs(credentialsSecret="k"), {}, "GcsCredentialsMissing", "service-account.json"),
        (
            azure(credentialsSecret="k"),
            {"AZURE_STORAGE_ACCOUNT_KEY": "a", "AZURE_STORAGE_SAS_TOKEN": "b"},
            "AzureCredentialsMissing",
            "exactly one",
        ),
        (s3(workloadIdentity={"roleArn": ROLE}), {}, "IdentityNotShared", "does not hold"),
    ],
)
def test_the_operator_reads_a_store_only_with_a_complete_secret(
    raw: dict[str, Any], data: dict[str, str] | None, reason: str, message: str
) -> None:
    with pytest.raises(CredentialsUnavailable, match=message) as caught:
        secret_environ(parse_backup_spec(raw), data, namespace="cleo-acme")
    assert caught.value.reason == reason


def test_secret_values_are_decoded_and_never_in_messages() -> None:
    secret = {"data": {"AWS_ACCESS_KEY_ID": "QUtJRA==", "AWS_SECRET_ACCESS_KEY": "c2VjcmV0"}}
    assert decoded_secret(secret) == {
        "AWS_ACCESS_KEY_ID": "AKID",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }
    assert decoded_secret(None) is None


@pytest.mark.parametrize(
    ("raw", "source"),
    [
        (s3(credentialsSecret="k"), "secret"),
        (s3(workloadIdentity={"roleArn": ROLE}, egress=["52.94.0.0/16"]), "web-identity"),
        (s3(instanceMetadata=True, egress=["52.94.0.0/16"]), "instance"),
        (gcs(credentialsSecret="k"), "secret"),
        (gcs(workloadIdentity={"serviceAccount": GSA}), "workload"),
        (azure(credentialsSecret="k"), "secret"),
        (azure(workloadIdentity={"clientId": CLIENT}), "workload"),
        (azure(instanceMetadata=True), "instance"),
    ],
)
def test_the_runner_is_told_its_credential_source(raw: dict[str, Any], source: str) -> None:
    assert env(raw)["CLEO_OBJECT_STORE_AUTH"] == source


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"gcs_base_url": "http://10.0.0.1"}, "gcs_base_url"),
        ({"disable_oauth": True}, "disable_oauth"),
        ({"type": "external_account"}, "type"),
        ({"client_email": ""}, "client_email"),
        ({"token_uri": "http://169.254.169.254/token"}, "token_uri"),
        ({"universe_domain": "example.com"}, "universe_domain"),
        ({"credential_source": {"url": "http://x"}}, "credential_source"),
    ],
)
def test_a_gcs_key_that_could_redirect_is_refused_by_field(
    change: dict[str, Any], named: str
) -> None:
    key = {
        "type": "service_account",
        "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        "client_email": "b@p.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
        **change,
    }
    with pytest.raises(CredentialsUnavailable) as caught:
        secret_environ(
            parse_backup_spec(gcs(credentialsSecret="k")),
            {"service-account.json": json.dumps(key)},
        )
    assert caught.value.reason == "CredentialsInvalid"
    assert named in str(caught.value)
    assert "AAAA" not in str(caught.value)
    assert "10.0.0.1" not in str(caught.value)
    assert service_account_key_problem("[]") is not None
    assert service_account_key_problem("{not json") is not None
    good = {k: v for k, v in key.items() if k not in change}
    good.setdefault("type", "service_account")
    good.setdefault("client_email", "b@p.iam.gserviceaccount.com")
    assert service_account_key_problem(json.dumps(good)) is None

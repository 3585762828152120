"""The CleoBackup model: a complete spec is accepted as written, bad ones name the field."""

from __future__ import annotations

from typing import Any

import pytest

from cleo_operator.api import backup
from cleo_operator.api.backup import CleoBackupStatus, parse_backup_spec
from cleo_operator.api.base import SpecError
from cleo_operator.api.cidr import host_metadata_problem, metadata_overlap
from tests.harness.specs import with_value
from tests.unit.api_support import assert_refused_naming

GOOD: dict[str, Any] = {
    "tenant": "acme",
    "schedule": "0 3 * * *",
    "timeZone": "Europe/Berlin",
    "suspend": False,
    "destination": {
        "type": "s3",
        "s3": {
            "endpoint": "https://minio.backup.svc:9000",
            "bucket": "cleo-backups",
            "prefix": "tenants/acme",
            "region": "eu-west-1",
            "credentialsSecret": "backup-s3",
        },
    },
    "retention": {
        "keepLast": 3,
        "keepHourly": 0,
        "keepDaily": 7,
        "keepWeekly": 4,
        "keepMonthly": 12,
    },
    "verification": {"enabled": True, "everyNth": 7},
    "concurrencyPolicy": "Replace",
    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    "historyLimit": 20,
}

PVC_DESTINATION = {"type": "pvc", "pvc": {"claimName": "backups", "path": "cleo/acme"}}


def test_a_complete_spec_is_accepted_and_dumps_back_as_written() -> None:
    spec = parse_backup_spec(GOOD)
    assert spec.destination.s3 is not None
    assert spec.destination.s3.credentials_secret == "backup-s3"
    assert spec.to_api() == GOOD


def test_a_one_off_backup_to_a_volume_with_defaults() -> None:
    spec = parse_backup_spec({"tenant": "acme", "destination": PVC_DESTINATION})
    assert spec.schedule is None
    assert spec.concurrency_policy == "Forbid"
    assert spec.history_limit == 10
    assert spec.retention is None  # nothing is ever pruned unless asked
    assert spec.verification is None
    assert spec.suspend is False


@pytest.mark.parametrize(
    "schedule",
    [
        "@hourly",
        "@daily",
        "@weekly",
        "@monthly",
        "@yearly",
        "*/15 * * * *",
        "0 3 * * 1-5",
        "0  3 1,15 * *",
    ],
)
def test_schedules_that_cron_understands(schedule: str) -> None:
    assert parse_backup_spec({**GOOD, "schedule": schedule}).schedule == schedule


def replaced(path: str, value: Any) -> dict[str, Any]:
    return with_value(GOOD, path, value)


BAD = [
    ("tenant", "Acme", "spec.tenant", "DNS label"),
    ("tenant", "a" * 41, "spec.tenant", "at most 40"),
    ("schedule", "* * * *", "spec.schedule", "cron schedule of 5 fields"),
    ("schedule", "@every 5m", "spec.schedule", "cron schedule"),
    ("schedule", "0 3 * * * *", "spec.schedule", "cron schedule"),
    ("timeZone", "Europe Berlin", "spec.timeZone", "time zone name"),
    ("destination.type", "nfs", "spec.destination.type", "'pvc', 's3', 'gcs' or 'azure'"),
    ("destination.type", "gcs", "spec.destination.gcs", "is required when type is gcs"),
    ("destination.type", "pvc", "spec.destination.s3", "must not be set when type is pvc"),
    ("destination.s3.bucket", "Cleo_Backups", "spec.destination.s3.bucket", "S3 bucket name"),
    (
        "destination.s3.endpoint",
        "minio:9000",
        "spec.destination.s3.endpoint",
        "http:// or https://",
    ),
    ("destination.s3.prefix", "../other-tenant", "spec.destination.s3.prefix", "relative path"),
    ("destination.s3.prefix", "/absolute", "spec.destination.s3.prefix", "relative path"),
    (
        "destination.s3.credentialsSecret",
        None,
        "spec.destination.s3.credentialsSecret",
        "exactly one of credentialsSecret, workloadIdentity or instanceMetadata",
    ),
    (
        "destination.s3.workloadIdentity",
        {"roleArn": "arn:aws:iam::123456789012:role/backup"},
        "spec.destination.s3.credentialsSecret",
        "found: credentialsSecret, workloadIdentity",
    ),
    (
        "destination.s3.workloadIdentity",
        {"roleArn": "arn:aws:iam::12345:role/backup"},
        "spec.destination.s3.workloadIdentity.roleArn",
        "IAM role ARN",
    ),
    ("destination.s3.egress", ["0.0.0.0/0"], "spec.destination.s3.egress[0]", "too wide"),
    ("destination.s3.egress", ["::/0"], "spec.destination.s3.egress[0]", "too wide"),
    ("destination.s3.egress", ["64.0.0.0/4"], "spec.destination.s3.egress[0]", "at least /8"),
    ("destination.s3.egress", ["2600::/16"], "spec.destination.s3.egress[0]", "at least /24"),
    ("destination.s3.egress", ["10.0.0.300/32"], "spec.destination.s3.egress[0]", "CIDR"),
    ("destination.s3.egress", ["169.254.0.0/16"], "spec.destination.s3.egress", "metadata"),
    ("destination.s3.egress", ["169.128.0.0/9"], "spec.destination.s3.egress", "metadata"),
    ("destination.s3.egress", ["64:ff9b::/96"], "spec.destination.s3.egress", "metadata"),
    ("destination.s3.egress", ["::ffff:0:0/96"], "spec.destination.s3.egress", "metadata"),
    (
        "destination.s3.endpoint",
        "http://169.254.169.254",
        "spec.destination.s3.endpoint",
        "metadata",
    ),
    (
        "destination.s3.endpoint",
        "http://0xa9fea9fe/",
        "spec.destination.s3.endpoint",
        "dotted-quad",
    ),
    (
        "resources",
        {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}},
        "spec.resources.requests.memory",
        "more than limits.memory",
    ),
    (
        "resources",
        {"requests": {"cpu": "1500m"}, "limits": {"cpu": 1}},
        "spec.resources.requests.cpu",
        "more than limits.cpu",
    ),
    ("retention.keepDaily", -1, "spec.retention.keepDaily", "greater than or equal to 0"),
    ("verification.everyNth", 0, "spec.verification.everyNth", "greater than or equal to 1"),
    ("concurrencyPolicy", "Queue", "spec.concurrencyPolicy", "'Forbid', 'Replace' or 'Allow'"),
    ("historyLimit", 0, "spec.historyLimit", "greater than or equal to 1"),
    ("historyLimit", 101, "spec.historyLimit", "less than or equal to 100"),
    ("resources.requests.cpu", "lots", "spec.resources.requests.cpu", "Kubernetes quantity"),
]


@pytest.mark.parametrize(
    ("path", "value", "field", "message"), BAD, ids=[f"{b[0]}={b[1]!r}" for b in BAD]
)
def test_a_bad_spec_is_refused_naming_the_field(
    path: str, value: Any, field: str, message: str
) -> None:
    assert_refused_naming(parse_backup_spec, replaced(path, value), field, message)


def test_the_destination_block_must_match_its_type() -> None:
    with pytest.raises(SpecError, match=r"^spec\.destination\.pvc: is required when type is pvc$"):
        parse_backup_spec({"tenant": "acme", "destination": {"type": "pvc"}})
    with pytest.raises(
        SpecError, match=r"^spec\.destination\.pvc: must not be set when type is s3"
    ):
        parse_backup_spec(
            {
                "tenant": "acme",
                "destination": {**GOOD["destination"], "pvc": PVC_DESTINATION["pvc"]},
            }
        )


def test_a_time_zone_needs_a_schedule() -> None:
    spec = {"tenant": "acme", "timeZone": "UTC", "destination": PVC_DESTINATION}
    with pytest.raises(SpecError, match=r"^spec\.timeZone: needs spec\.schedule"):
        parse_backup_spec(spec)


def test_status_round_trips() -> None:
    record = {
        "time": "2024-05-01T03:00:00Z",
        "archive": "tenants/acme/2024-05-01T030000Z.cleo",
        "sizeBytes": 123456,
        "durationSeconds": 12.5,
    }
    written = {
        "observedGeneration": 2,
        "phase": "Scheduled",
        "conditions": [],
        "lastBackup": record,
        "lastSuccessfulBackup": record,
        "lastVerifiedBackup": record,
        "history": [
            {
                "startTime": "2024-05-01T03:00:00Z",
                "endTime": "2024-05-01T03:00:12Z",
                "succeeded": True,
                "archive": record["archive"],
                "sizeBytes": 123456,
                "message": "backed up and verified",
            },
            {
                "startTime": "2024-04-30T03:00:00Z",
                "succeeded": False,
                "message": "bucket unreachable",
            },
        ],
        "cronJobName": "cleo-backup-nightly",
    }
    assert CleoBackupStatus.model_validate(written).to_api() == written


def test_the_kind_is_described_once() -> None:
    assert (backup.RESOURCE.kind, backup.RESOURCE.plural) == ("CleoBackup", "cleobackups")
    assert backup.RESOURCE.short_names == ("cb",)
    assert backup.RESOURCE.scope == "Namespaced"
    with pytest.raises(SpecError, match="at most 40"):
        backup.RESOURCE.validate_name("b" * 41)


# --- one-offs asked for with spec.from -----------------------------------------------------


def test_a_one_off_from_another_backup_names_only_its_tenant_and_source() -> None:
    spec = parse_backup_spec({"tenant": "acme", "from": "nightly"})
    assert (spec.from_backup, spec.destination, spec.schedule) == ("nightly", None, None)
    assert spec.to_api() == {
        "tenant": "acme",
        "from": "nightly",
        "suspend": False,
        "concurrencyPolicy": "Forbid",
        "historyLimit": 10,
    }


def test_a_spec_needs_a_destination_or_a_source() -> None:
    assert_refused_naming(
        parse_backup_spec, {"tenant": "acme"}, "spec.destination", "unless spec.from"
    )


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"destination": PVC_DESTINATION}, "spec.destination", "must not be set with spec.from"),
        ({"schedule": "@daily"}, "spec.schedule", "runs the named CleoBackup once"),
        ({"retention": {"keepLast": 1}}, "spec.retention", "named CleoBackup's retention"),
        ({"verification": {"enabled": False}}, "spec.verification", "named CleoBackup's"),
        ({"from": "Not_A_Name"}, "spec.from", "DNS subdomain"),
        ({"from": "x" * 41}, "spec.from", "at most 40 characters"),
    ],
)
def test_a_one_off_from_a_source_refuses_what_the_source_decides(
    extra: dict[str, Any], field: str, message: str
) -> None:
    assert_refused_naming(
        parse_backup_spec, {"tenant": "acme", "from": "nightly", **extra}, field, message
    )


@pytest.mark.parametrize(
    ("cidr", "overlap"),
    [
        ("169.254.169.254/32", "169.254.0.0/16"),
        ("169.0.0.0/8", "169.254.0.0/16"),
        ("169.0.0.0/9", None),
        ("169.255.0.0/16", None),
        ("fd00:ec2::/32", "fd00:e00::/24"),
        ("fd00:ec3::/32", "fd00:e00::/24"),
        ("fd00:f00::/24", None),
        ("0064:ff9b::/96", "64::/16"),
        ("164::/16", None),
        ("::/24", "::/16"),
        ("2600:1f00::/24", None),
    ],
)
def test_metadata_ranges_are_found_at_the_granularity_the_crd_rule_sees(
    cidr: str, overlap: str | None
) -> None:
    assert metadata_overlap(cidr) == overlap


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("169.254.169.254", True),
        ("2852039166", True),
        ("169.254.43518", True),
        ("0251.0376.0251.0376", True),
        ("s3.example.com", False),
        ("s3.example.com1", False),
        ("203.0.113.7", False),
        ("[2600:1f00::1]", False),
        ("[fd00:ec2::254]", True),
    ],
)
def test_an_endpoint_host_that_can_name_a_metadata_address_is_refused(
    host: str, refused: bool
) -> None:
    assert (host_metadata_problem(host) is not None) == refused

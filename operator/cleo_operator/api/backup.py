"""CleoBackup: what of a tenant to back up, when, where to, how long to keep, how to verify.

Namespaced, in the tenant's namespace, so that the tenant's admins can see their backups
and the CronJob (or one-off Job) lives beside them. Without ``schedule`` the backup runs
once; with it, on the cron schedule. Retention counts are kept unset by default:
backups are never destroyed unless the owner says how many to keep.

``from`` is how a tenant's admins ask for a backup now: it names a CleoBackup of the same
namespace and tenant (one the platform set up), and the operator runs that backup once,
with that backup's destination and verification (`reconcile.backup_source`). Such a spec
names nothing the platform chose (no destination, credentials, egress, resources), which is
what lets the admission policy allow tenant admins to create it and nothing else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from cleo_operator.api.base import (
    DNS_SUBDOMAIN_HINT,
    DNS_SUBDOMAIN_PATTERN,
    DnsSubdomain,
    ResourceRequirements,
    SpecModel,
    StatusBase,
    StatusModel,
    TenantName,
    Timestamp,
    requests_over_limits,
)
from cleo_operator.api.cidr import Cidr, destination_metadata_problem, metadata_rules
from cleo_operator.api.cron import CronError, parse_cron
from cleo_operator.api.errors import RuleViolation, RuleViolations, check_block_of_type
from cleo_operator.api.resource import PrinterColumn, ResourceDefinition, parse_spec
from cleo_operator.api.schema import Extra, Matches, Rules, cel, validations

__all__ = [
    "KIND",
    "NAME_MAX_LENGTH",
    "PLURAL",
    "RESOURCE",
    "SHORT_NAMES",
    "SINGULAR",
    "AzureDestination",
    "AzureWorkloadIdentity",
    "BackupPhase",
    "BackupRecord",
    "BackupRun",
    "BackupVerification",
    "CleoBackupSpec",
    "CleoBackupStatus",
    "DestinationSpec",
    "GcsDestination",
    "GcsWorkloadIdentity",
    "PvcDestination",
    "RetentionSpec",
    "S3Destination",
    "S3WorkloadIdentity",
    "VerificationSpec",
    "parse_backup_spec",
]

PLURAL: Final = "cleobackups"
SINGULAR: Final = "cleobackup"
KIND: Final = "CleoBackup"
SHORT_NAMES: Final = ("cb",)

NAME_MAX_LENGTH: Final = 40
"""The CronJob made from a CleoBackup is named after it and may have at most 52 characters
(its Jobs add 11); 40 leaves room for a prefix."""

SCHEDULE_PATTERN = r"^(@(hourly|daily|weekly|monthly|yearly)|\S+( +\S+){4})$"
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"
# Relative paths whose segments never start with '.', so neither '..' nor hidden names.
RELATIVE_PATH_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$"
RELATIVE_PATH_HINT = (
    "a relative path of names made of letters, digits, '.', '_' and '-' (not starting with "
    "'.'), separated by '/'"
)
S3_BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
ENDPOINT_PATTERN = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
REGION_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
GCS_BUCKET_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$"
AZURE_ACCOUNT_PATTERN = r"^[a-z0-9]{3,24}$"
AZURE_CONTAINER_PATTERN = r"^[a-z0-9](-?[a-z0-9])+$"
ROLE_ARN_PATTERN = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$"
GCP_SERVICE_ACCOUNT_PATTERN = (
    r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9.-]+\.iam\.gserviceaccount\.com$"
)
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
EGRESS_MIN_PREFIX: Final = {4: 8, 6: 24}
"""The widest egress range a CleoBackup may name, per IP version. An egress range opens the
runner's pods (which hold the tenant's database login and keyring) to every address in
it, so 0.0.0.0/0 (and ::/0) would undo the NetworkPolicy; a /8 (16 million addresses, the
widest block any provider publishes for its object store) is the most a real store needs,
and for IPv6 a /24 (the published cloud ranges are /28 and narrower)."""


def _check_schedule(text: str) -> str:
    # The CRD's pattern checks the shape only; this is the meaning (api/cron.py), so that a
    # schedule the CronJob controller would refuse, or one that never fires, is named here.
    try:
        parse_cron(text)
    except CronError as error:
        raise ValueError(f"is not a valid schedule: {error}") from None
    return text


Schedule = Annotated[
    str,
    Field(min_length=1, max_length=128),
    Matches(
        SCHEDULE_PATTERN,
        "a cron schedule of 5 fields (minute hour day-of-month month day-of-week), e.g. "
        "'0 3 * * *', or one of @hourly, @daily, @weekly, @monthly, @yearly",
    ),
    # After the shape check, so a wrong shape keeps the CRD's message.
    AfterValidator(_check_schedule),
]
RelativePath = Annotated[
    str, Field(min_length=1, max_length=512), Matches(RELATIVE_PATH_PATTERN, RELATIVE_PATH_HINT)
]
Count = Annotated[int, Field(ge=0, le=100000)]
Endpoint = Annotated[
    str,
    Field(max_length=512),
    Matches(ENDPOINT_PATTERN, "an http:// or https:// URL, e.g. https://s3.example.com"),
]
Bucket = Annotated[
    str,
    Field(min_length=3, max_length=63),
    Matches(S3_BUCKET_PATTERN, "an S3 bucket name: 3-63 lowercase letters, digits, '.', '-'"),
]
Region = Annotated[
    str, Field(max_length=64), Matches(REGION_PATTERN, "a region name such as eu-west-1")
]
TimeZone = Annotated[
    str, Field(max_length=64), Matches(TIME_ZONE_PATTERN, "a time zone name such as Europe/Berlin")
]
SourceName = Annotated[
    str,
    Field(min_length=1, max_length=NAME_MAX_LENGTH),
    Matches(DNS_SUBDOMAIN_PATTERN, DNS_SUBDOMAIN_HINT),
]
"""The name of a CleoBackup (whose names are at most `NAME_MAX_LENGTH` long)."""


def _check_egress_range(text: str) -> str:
    network = ipaddress.ip_network(text, strict=False)
    shortest = EGRESS_MIN_PREFIX[network.version]
    if network.prefixlen < shortest:
        raise ValueError(
            f"{text} is too wide for a runner's egress: name the object store's ranges "
            f"(at least /{shortest} for IPv{network.version}), never every address"
        )
    return text


EgressRange = Annotated[Cidr, AfterValidator(_check_egress_range)]
_EGRESS_RULE = cel(
    "self.all(c, c.contains(':') ? c.matches('/(2[4-9]|[3-9][0-9]|1[01][0-9]|12[0-8])$') "
    ": c.matches('/([89]|[12][0-9]|3[0-2])$'))",
    "{path}: a range is too wide (at least /8 for IPv4, /24 for IPv6): name the object "
    "store's ranges, never 0.0.0.0/0 or ::/0",
)
Egress = Annotated[list[EgressRange], Rules(_EGRESS_RULE)]
Uuid = Annotated[str, Field(max_length=36), Matches(UUID_PATTERN, "a UUID")]


class PvcDestination(SpecModel):
    """Archives go to a PersistentVolumeClaim in the backup's namespace."""

    claim_name: DnsSubdomain = Field(description="Name of the PersistentVolumeClaim.")
    path: RelativePath | None = Field(
        default=None,
        description="Folder inside the volume, e.g. backups/tenant-a; unset, its root.",
    )


def _one_credential_source(block: str, *, keys: str) -> dict[str, Any]:
    """The CEL rules of a store's block: exactly one of its credential sources; no egress
    range nor IP endpoint that reaches a metadata service (`api.cidr.METADATA_RANGES`)."""
    return validations(
        cel(
            "[has(self.credentialsSecret), has(self.workloadIdentity), "
            "has(self.instanceMetadata) && self.instanceMetadata].exists_one(x, x)",
            f"spec.destination.{block}: set exactly one of credentialsSecret ({keys}), "
            "workloadIdentity, or instanceMetadata: true",
        ),
        *metadata_rules(f"spec.destination.{block}"),
    )


class _ObjectStoreDestination(SpecModel):
    """What every object store destination has: a prefix, egress and one credential source."""

    prefix: RelativePath | None = Field(
        default=None, description="Key prefix inside the bucket, e.g. cleo/tenant-a."
    )
    egress: Egress | None = Field(
        default=None,
        max_length=32,
        description=(
            "Address ranges of the object store (CIDR, e.g. 203.0.113.0/24; at least /8 for "
            "IPv4 and /24 for IPv6), the only places the backup runner may reach on the "
            "endpoint's port besides the API server; with workloadIdentity, also the token "
            "service's. Required unless endpoint names the store by IP address or the "
            "operator lists the platform's stores."
        ),
    )
    instance_metadata: bool | None = Field(
        default=None,
        description=(
            "Use the node's identity from the cloud's instance metadata service (the runner "
            "may then reach 169.254.169.254); unset, use credentialsSecret or "
            "workloadIdentity."
        ),
    )

    @model_validator(mode="after")
    def _no_metadata(self) -> _ObjectStoreDestination:
        problem = destination_metadata_problem(
            self.egress or (),
            getattr(self, "endpoint", None),
            instance_metadata=bool(self.instance_metadata),
        )
        if problem is not None:
            raise RuleViolation(*problem)
        return self

    @model_validator(mode="after")
    def _one_source(self) -> _ObjectStoreDestination:
        sources = [
            name
            for name, present in (
                ("credentialsSecret", getattr(self, "credentials_secret", None) is not None),
                ("workloadIdentity", getattr(self, "workload_identity", None) is not None),
                ("instanceMetadata", bool(self.instance_metadata)),
            )
            if present
        ]
        if len(sources) != 1:
            found = ", ".join(sources) if sources else "none"
            raise RuleViolation(
                ("credentialsSecret",),
                f"set exactly one of credentialsSecret, workloadIdentity or instanceMetadata: "
                f"true (found: {found})",
            )
        return self


class S3WorkloadIdentity(SpecModel):
    """IAM roles for service accounts (IRSA): the runner assumes a role with its token."""

    role_arn: Annotated[
        str,
        Field(max_length=600),
        Matches(ROLE_ARN_PATTERN, "an IAM role ARN such as arn:aws:iam::123456789012:role/x"),
    ] = Field(
        description=(
            "The IAM role to assume; its trust policy must name the runner's ServiceAccount "
            "(system:serviceaccount:NAMESPACE:cleo-backup-NAME)."
        )
    )
    sts_endpoint: Endpoint | None = Field(
        default=None,
        description="STS endpoint, for regional or private STS; unset, the region's.",
    )


class S3Destination(_ObjectStoreDestination):
    """Archives go to an S3-compatible object store."""

    model_config = ConfigDict(
        json_schema_extra=_one_credential_source(
            "s3", keys="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    )

    endpoint: Endpoint | None = Field(
        default=None,
        description="URL of the store, for S3-compatible stores; unset, AWS S3 of the region.",
    )
    bucket: Bucket = Field(description="The bucket.")
    region: Region | None = Field(default=None, description="The bucket's region.")
    credentials_secret: DnsSubdomain | None = Field(
        default=None,
        description=(
            "Secret in the backup's namespace with the keys AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (and optionally AWS_SESSION_TOKEN)."
        ),
    )
    workload_identity: S3WorkloadIdentity | None = Field(
        default=None, description="Web identity (IRSA) instead of static keys."
    )


class GcsWorkloadIdentity(SpecModel):
    """GKE workload identity: the runner's ServiceAccount acts as a Google service account."""

    service_account: Annotated[
        str,
        Field(max_length=254),
        Matches(
            GCP_SERVICE_ACCOUNT_PATTERN,
            "a Google service account e-mail, NAME@PROJECT.iam.gserviceaccount.com",
        ),
    ] = Field(
        description=(
            "The Google service account; it must grant roles/iam.workloadIdentityUser to "
            "PROJECT.svc.id.goog[NAMESPACE/cleo-backup-NAME]."
        )
    )


class GcsDestination(_ObjectStoreDestination):
    """Archives go to a Google Cloud Storage bucket."""

    model_config = ConfigDict(
        json_schema_extra=_one_credential_source("gcs", keys="service-account.json")
    )

    endpoint: Endpoint | None = Field(
        default=None,
        description=(
            "URL of the storage API, for emulators and private endpoints; unset, "
            "https://storage.googleapis.com."
        ),
    )
    bucket: Annotated[
        str,
        Field(min_length=3, max_length=63),
        Matches(GCS_BUCKET_PATTERN, "a bucket name: 3-63 lowercase letters, digits, '.', '_', '-'"),
    ] = Field(description="The bucket.")
    credentials_secret: DnsSubdomain | None = Field(
        default=None,
        description=(
            "Secret in the backup's namespace with the key service-account.json (a service "
            "account's JSON key)."
        ),
    )
    workload_identity: GcsWorkloadIdentity | None = Field(
        default=None, description="GKE workload identity instead of a key."
    )


class AzureWorkloadIdentity(SpecModel):
    """Azure workload identity: the runner's token is exchanged for a managed identity's."""

    client_id: Uuid = Field(
        description=(
            "Client id of the user-assigned managed identity (or app registration) whose "
            "federated credential names system:serviceaccount:NAMESPACE:cleo-backup-NAME."
        )
    )
    tenant_id: Uuid | None = Field(
        default=None, description="The Entra tenant; unset, the webhook's default."
    )


class AzureDestination(_ObjectStoreDestination):
    """Archives go to an Azure Blob Storage container."""

    model_config = ConfigDict(
        json_schema_extra=_one_credential_source(
            "azure", keys="AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN"
        )
    )

    endpoint: Endpoint | None = Field(
        default=None,
        description=(
            "URL of the blob service, for emulators and sovereign clouds, e.g. "
            "https://ACCOUNT.blob.core.chinacloudapi.cn; unset, "
            "https://ACCOUNT.blob.core.windows.net."
        ),
    )
    account: Annotated[
        str,
        Field(min_length=3, max_length=24),
        Matches(AZURE_ACCOUNT_PATTERN, "a storage account name: 3-24 lowercase letters, digits"),
    ] = Field(description="The storage account.")
    container: Annotated[
        str,
        Field(min_length=3, max_length=63),
        Matches(
            AZURE_CONTAINER_PATTERN,
            "a container name: 3-63 lowercase letters, digits and single '-' between them",
        ),
    ] = Field(description="The container.")
    credentials_secret: DnsSubdomain | None = Field(
        default=None,
        description=(
            "Secret in the backup's namespace with the key AZURE_STORAGE_ACCOUNT_KEY or "
            "AZURE_STORAGE_SAS_TOKEN."
        ),
    )
    workload_identity: AzureWorkloadIdentity | None = Field(
        default=None, description="Azure workload identity instead of a key."
    )


DESTINATION_TYPES: Final = ("pvc", "s3", "gcs", "azure")


class DestinationSpec(SpecModel):
    """Where archives go: set the block that matches type, and only that one."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            *(
                cel(
                    f"has(self.{block}) == (self.type == '{block}')",
                    f"spec.destination.{block} must be set when spec.destination.type is "
                    f"{block}, and only then",
                    field_path=f".{block}",
                )
                for block in DESTINATION_TYPES
            )
        )
    )

    type: Literal["pvc", "s3", "gcs", "azure"] = Field(description="pvc, s3, gcs or azure.")
    pvc: PvcDestination | None = Field(default=None, description="The volume, for type pvc.")
    s3: S3Destination | None = Field(default=None, description="The object store, for type s3.")
    gcs: GcsDestination | None = Field(
        default=None, description="The Google Cloud Storage bucket, for type gcs."
    )
    azure: AzureDestination | None = Field(
        default=None, description="The Azure Blob container, for type azure."
    )

    @property
    def object_store(self) -> S3Destination | GcsDestination | AzureDestination | None:
        """The object store block that is set (None for a volume)."""
        return self.s3 or self.gcs or self.azure

    @model_validator(mode="after")
    def _block_matches_type(self) -> DestinationSpec:
        check_block_of_type(self, self.type, {block: block for block in DESTINATION_TYPES})
        return self


class RetentionSpec(SpecModel):
    """How many archives to keep (grandfather-father-son); unset counts keep everything.

    An archive is kept when any rule keeps it: the newest ``keepLast``, and the newest of
    each of the last ``keepHourly`` hours, ``keepDaily`` days, and so on.
    """

    keep_last: Count | None = Field(default=None, description="Keep the newest N archives.")
    keep_hourly: Count | None = Field(
        default=None, description="Keep the newest archive of each of the last N hours."
    )
    keep_daily: Count | None = Field(
        default=None, description="Keep the newest archive of each of the last N days."
    )
    keep_weekly: Count | None = Field(
        default=None, description="Keep the newest archive of each of the last N weeks."
    )
    keep_monthly: Count | None = Field(
        default=None, description="Keep the newest archive of each of the last N months."
    )


class VerificationSpec(SpecModel):
    """Restore archives into a throwaway database to prove they can be restored."""

    enabled: bool = Field(default=False, description="Verify archives after they are made.")
    every_nth: int = Field(
        default=1, ge=1, le=1000, description="Verify every Nth archive (1: every archive)."
    )


class CleoBackupSpec(SpecModel):
    """The desired backups of one tenant."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.timeZone) || has(self.schedule)",
                "spec.timeZone needs spec.schedule (a one-off backup has no schedule)",
                field_path=".timeZone",
            ),
            cel(
                "has(self.destination) != has(self.from)",
                "spec.destination (where archives go) or spec.from (the CleoBackup to run "
                "once now) must be set, not both",
                field_path=".destination",
            ),
            cel(
                "!has(self.from) || (!has(self.schedule) && !has(self.retention) && "
                "!has(self.verification))",
                "spec.from runs the named CleoBackup once, with its retention and "
                "verification: spec.schedule, spec.retention and spec.verification must not "
                "be set with it",
                field_path=".from",
            ),
            cel(
                "has(oldSelf.from) == has(self.from)",
                "spec.from cannot be added or removed after creation: create another "
                "CleoBackup instead",
                field_path=".from",
            ),
        )
    )

    tenant: Annotated[
        TenantName,
        Rules(
            cel(
                "self == oldSelf",
                "spec.tenant is immutable: create another CleoBackup for another tenant",
            )
        ),
    ] = Field(description="Name of the CleoTenant to back up.")
    schedule: Schedule | None = Field(
        default=None,
        description=(
            "When to back up, in cron syntax, e.g. '0 3 * * *' or @daily; unset, back up once."
        ),
    )
    time_zone: TimeZone | None = Field(
        default=None,
        description="Time zone of the schedule, e.g. Europe/Berlin; unset, the cluster's (UTC).",
    )
    suspend: bool = Field(default=False, description="Stop starting new scheduled backups.")
    destination: (
        # null would be "set" for CEL's has() but unset for the operator: refuse null.
        Annotated[DestinationSpec, Extra({"x-cleo-nullable": False})] | None
    ) = Field(
        default=None,
        description="Where archives go; required unless spec.from names the backup to run.",
    )
    from_backup: (
        Annotated[
            SourceName,
            Rules(
                cel(
                    "self == oldSelf",
                    "spec.from is immutable: create another CleoBackup to run another one",
                )
            ),
            Extra({"x-cleo-nullable": False}),
        ]
        | None
    ) = Field(
        default=None,
        alias="from",
        description=(
            "A CleoBackup of this namespace and tenant to run once, now, with its destination, "
            "retention and verification (a one-off backup a tenant's admin may ask for); "
            "without spec.destination, spec.schedule, spec.retention and spec.verification."
        ),
    )
    retention: RetentionSpec | None = Field(
        default=None, description="How many archives to keep; unset, keep all."
    )
    verification: VerificationSpec | None = Field(
        default=None, description="Whether to prove archives restore; unset, no verification."
    )
    concurrency_policy: Literal["Forbid", "Replace", "Allow"] = Field(
        default="Forbid",
        description=(
            "When a backup is due while the previous one runs: Forbid skips it, Replace "
            "stops the running one, Allow runs both."
        ),
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="CPU and memory of the backup pod."
    )
    history_limit: int = Field(
        default=10, ge=1, le=100, description="How many runs status.history keeps."
    )

    def resolved_destination(self) -> DestinationSpec:
        """Where archives go; a one-off made with ``from`` is resolved into its source's
        spec (`reconcile.backup_source`) before anything renders or runs it."""
        if self.destination is None:
            raise ValueError("spec.from must be resolved into its source's destination first")
        return self.destination

    @model_validator(mode="after")
    def _cross_field_rules(self) -> CleoBackupSpec:
        violations = []
        if self.time_zone is not None and self.schedule is None:
            violations.append(
                RuleViolation(
                    ("timeZone",), "needs spec.schedule (a one-off backup has no schedule)"
                )
            )
        over = requests_over_limits(self.resources)
        if over is not None:
            violations.append(RuleViolation(("resources", *over.loc), over.message))
        if self.from_backup is None and self.destination is None:
            violations.append(
                RuleViolation(
                    ("destination",),
                    "is required unless spec.from names a CleoBackup to run once",
                )
            )
        if self.from_backup is not None:
            if self.destination is not None:
                violations.append(
                    RuleViolation(
                        ("destination",),
                        "must not be set with spec.from: the named CleoBackup's is used",
                    )
                )
            for key, value, why in (
                ("schedule", self.schedule, "spec.from runs the named CleoBackup once, now"),
                ("retention", self.retention, "the named CleoBackup's retention applies"),
                ("verification", self.verification, "the named CleoBackup's verification applies"),
            ):
                if value is not None:
                    violations.append(
                        RuleViolation((key,), f"must not be set with spec.from: {why}")
                    )
        RuleViolations.raise_any(violations)
        return self


BackupPhase = Literal[
    "Pending", "Scheduled", "Running", "Succeeded", "Failed", "Suspended", "Invalid"
]


class BackupRecord(StatusModel):
    """One backup attempt and, when it succeeded, its archive."""

    time: Timestamp = Field(description="When the backup started.")
    succeeded: bool | None = Field(default=None, description="Whether it made an archive.")
    archive: str | None = Field(
        default=None, max_length=1024, description="Where the archive is (storage: object)."
    )
    backup_id: str | None = Field(
        default=None,
        max_length=64,
        description="The backup's id, as `cleo-operator restore --archive` takes it.",
    )
    size_bytes: int | None = Field(default=None, ge=0, description="Size of the archive.")
    dump_size_bytes: int | None = Field(
        default=None, ge=0, description="Size of the dump inside it, before encryption."
    )
    duration_seconds: float | None = Field(
        default=None, ge=0, description="How long the backup took."
    )
    sequence: int | None = Field(
        default=None,
        ge=1,
        description="Which successful backup of this CleoBackup it was (1, 2, ...).",
    )


class BackupRun(StatusModel):
    """One run of the backup, successful or not."""

    start_time: Timestamp = Field(description="When the run started.")
    end_time: Timestamp | None = Field(default=None, description="When it ended.")
    succeeded: bool | None = Field(default=None, description="Whether it made an archive.")
    reason: str | None = Field(
        default=None,
        max_length=128,
        description="Why it ended so, as one CamelCase word (BackupSucceeded, DumpFailed...).",
    )
    backup_id: str | None = Field(
        default=None, max_length=64, description="The id of the backup it made."
    )
    archive: str | None = Field(default=None, max_length=1024, description="The archive it made.")
    size_bytes: int | None = Field(default=None, ge=0, description="Size of the archive.")
    job: str | None = Field(default=None, max_length=63, description="The Job whose pod ran it.")
    message: str | None = Field(
        default=None, max_length=1024, description="What happened, for people."
    )


class BackupVerification(StatusModel):
    """The newest verification: a backup restored into a scratch database and compared."""

    backup_id: str = Field(max_length=64, description="The backup verified.")
    time: Timestamp = Field(description="When the verification finished.")
    passed: bool = Field(description="Whether it restored and every table matched.")
    reason: str = Field(
        max_length=128, description="Verified, ContentMismatch, or why it could not restore."
    )
    message: str = Field(max_length=1024, description="What was found, for people.")
    sequence: int | None = Field(
        default=None, ge=1, description="The sequence number of the backup verified."
    )


class CleoBackupStatus(StatusBase):
    """What the operator observed of the backups."""

    phase: BackupPhase | None = Field(
        default=None, description="A one-word summary for kubectl get."
    )
    last_backup: BackupRecord | None = Field(default=None, description="The newest attempt.")
    last_successful_backup: BackupRecord | None = Field(
        default=None, description="The newest archive made."
    )
    last_verified_backup: BackupRecord | None = Field(
        default=None, description="The newest archive proven to restore."
    )
    last_verification: BackupVerification | None = Field(
        default=None, description="The newest verification, passed or not."
    )
    successful_backups: int | None = Field(
        default=None, ge=0, description="How many backups of this CleoBackup succeeded."
    )
    history: list[BackupRun] = Field(
        default_factory=list,
        max_length=100,
        description="The latest runs, newest first (spec.historyLimit of them).",
    )
    cron_job_name: str | None = Field(
        default=None, max_length=63, description="The CronJob that runs scheduled backups."
    )


RESOURCE: Final = ResourceDefinition(
    kind=KIND,
    plural=PLURAL,
    singular=SINGULAR,
    short_names=SHORT_NAMES,
    scope="Namespaced",
    description=(
        "A CleoBackup backs up one CleoTenant's database, once or on a schedule, to a volume "
        "or an object store, keeps as many archives as told and proves they restore."
    ),
    spec_model=CleoBackupSpec,
    status_model=CleoBackupStatus,
    printer_columns=(
        PrinterColumn(
            name="Schedule", type="string", json_path=".spec.schedule", description="Cron."
        ),
        PrinterColumn(
            name="Last Backup",
            type="date",
            json_path=".status.lastBackup.time",
            description="Time since the newest attempt.",
        ),
        PrinterColumn(
            name="Last Verified",
            type="date",
            json_path=".status.lastVerifiedBackup.time",
            description="Time since the newest archive proven to restore.",
        ),
        PrinterColumn(
            name="Phase", type="string", json_path=".status.phase", description="Summary."
        ),
        PrinterColumn(
            name="Age",
            type="date",
            json_path=".metadata.creationTimestamp",
            description="Time since creation.",
        ),
    ),
    name_max_length=NAME_MAX_LENGTH,
    name_reason="its CronJob is named after it",
)


def parse_backup_spec(body_spec: Mapping[str, Any] | None) -> CleoBackupSpec:
    """Validate a CleoBackup's raw ``.spec``; raises `SpecError` naming the bad fields."""
    return parse_spec(CleoBackupSpec, KIND, body_spec)

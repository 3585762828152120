"""CleoTenant: one customer of CleoAI (cluster-scoped, because it owns a namespace).

The spec says what the tenant should have; the operator renders it into a namespace and
the objects inside it. Choices made here, and why:

- Sub-objects that are optional as a whole (``encryption``, ``database``, ``failover``,
  ``autoscaling``, ``network``) default to their model's defaults inside the operator
  but are not written into the stored object: a tenant that never mentions them stays
  short. Scalar defaults inside a given sub-object *are* persisted by the API server
  (e.g. ``deletionPolicy: Retain``, ``database.connectionLimit: 20``): a later operator
  version that changes a default must not silently change what existing tenants get.
- ``namespace`` is fixed at creation: moving a tenant's data between namespaces is a
  migration, not an edit. CEL says so at the API server; `validate_tenant_spec_update`
  says the same for callers that hold both versions.
- Names starting with ``cleo-`` are reserved for the objects the operator makes in the
  namespace (keyring, database credentials), so a tenant's sealed secret cannot
  overwrite them.

Over 800 lines, on purpose: the spec's cross-field rules (CEL and pydantic side by side)
must see every sub-model of the kind at once; sub-models with reasons of their own to
change live apart (`api.migrations`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from cleo_operator.api.autoscaling import HorizontalPodAutoscalerBehavior, MetricSpec
from cleo_operator.api.base import (
    TENANT_NAME_MAX_LENGTH,
    DnsLabel,
    Duration,
    IntOrPercent,
    PositiveDuration,
    Quantity,
    ResourceRequirements,
    SpecError,
    SpecIssue,
    SpecModel,
    StatusBase,
    StatusModel,
    Timestamp,
)
from cleo_operator.api.cidr import Cidr
from cleo_operator.api.database import DEFAULT_SITE, DatabaseSpec
from cleo_operator.api.errors import RuleViolation, RuleViolations
from cleo_operator.api.labels import Labels
from cleo_operator.api.migrations import MigrationsSpec, MigrationsStatus
from cleo_operator.api.resource import PrinterColumn, ResourceDefinition, parse_spec
from cleo_operator.api.schema import (
    Extra,
    KeysMatch,
    ListMap,
    ListSet,
    Matches,
    Rules,
    cel,
    validations,
)

__all__ = [
    "DEFAULT_SITE",
    "DEFAULT_TARGET_CPU_UTILIZATION_PERCENTAGE",
    "DNS_ZONE_NAMESPACES",
    "KIND",
    "PLURAL",
    "RESOURCE",
    "SHORT_NAMES",
    "SINGULAR",
    "SYSTEM_NAMESPACES",
    "SYSTEM_NAMESPACE_PREFIX",
    "AutoscalingSpec",
    "ChildReference",
    "CleoTenantSpec",
    "CleoTenantStatus",
    "DatabaseEgressRule",
    "DatabaseSpec",
    "EncryptionSpec",
    "EnvVar",
    "FailoverPolicySpec",
    "IngressPeer",
    "LimitsSpec",
    "NetworkSpec",
    "PodDisruptionBudgetSpec",
    "QuotaSpec",
    "ReplicaStatus",
    "SealedSecret",
    "SecretStatus",
    "Subject",
    "TenantDatabaseStatus",
    "TenantPhase",
    "WorkloadSpec",
    "parse_tenant_spec",
    "validate_tenant_spec_update",
]

PLURAL: Final = "cleotenants"
SINGULAR: Final = "cleotenant"
KIND: Final = "CleoTenant"
SHORT_NAMES: Final = ("ct", "cleotenant")

DEFAULT_TARGET_CPU_UTILIZATION_PERCENTAGE: Final = 80
"""The HPA's CPU target when autoscaling sets neither a target nor metrics."""

RESERVED_PREFIX: Final = "cleo-"
SYSTEM_NAMESPACES: Final = ("default", "kube-system", "kube-public", "kube-node-lease")
SYSTEM_NAMESPACE_PREFIX: Final = "kube-"
"""Kubernetes reserves every namespace name with this prefix for itself."""
DNS_ZONE_NAMESPACES: Final = ("svc", "pod")
"""Namespaces named like a zone of the cluster's DNS: with the search list, a relative name
``x.<ns>.svc`` is tried as ``x.<ns>.svc.svc.cluster.local`` first, a name of namespace
``svc``, so whoever owns it could answer for every other namespace."""

# --- value types of this kind ----------------------------------------------------------------

# Keys of Secrets and ConfigMaps (Kubernetes' IsConfigMapKey).
DATA_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
DATA_KEY_HINT = "letters, digits, '-', '_' and '.'"

C_IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
EnvName = Annotated[
    str,
    Field(min_length=1, max_length=128),
    Matches(
        C_IDENTIFIER_PATTERN, "a C identifier: letters, digits and '_', not starting with a digit"
    ),
]


Port = Annotated[int, Field(ge=1, le=65535)]

SubjectKind = Literal["User", "Group"]
DeletionPolicy = Literal["Retain", "Delete"]

# --- spec -------------------------------------------------------------------------------------


class Subject(SpecModel):
    """A user or group as the cluster's authentication names them."""

    kind: SubjectKind = Field(description="User or Group.")
    name: str = Field(
        min_length=1,
        max_length=253,
        description="The user's or group's name, e.g. alice@example.com.",
    )


class QuotaSpec(SpecModel):
    """Totals the tenant's namespace may use (a ResourceQuota). An unset field is not limited."""

    cpu: Quantity | None = Field(default=None, description="CPU all pods may request in total.")
    memory: Quantity | None = Field(
        default=None, description="Memory all pods may request in total."
    )
    storage: Quantity | None = Field(
        default=None, description="Storage all PersistentVolumeClaims may request in total."
    )
    pods: int | None = Field(default=None, ge=0, le=100000, description="Most pods at once.")
    services: int | None = Field(default=None, ge=0, le=100000, description="Most Services.")
    secrets: int | None = Field(default=None, ge=0, le=100000, description="Most Secrets.")
    config_maps: int | None = Field(default=None, ge=0, le=100000, description="Most ConfigMaps.")
    persistent_volume_claims: int | None = Field(
        default=None, ge=0, le=100000, description="Most PersistentVolumeClaims."
    )
    backups: int | None = Field(
        default=None,
        ge=1,
        le=10000,
        description=(
            "Most CleoBackups in the namespace: the platform's and the one-offs the tenant's "
            "admins ask for (which bounds how often they can); unset, 20 (a quota always "
            "caps CleoBackups)."
        ),
    )


class LimitsSpec(SpecModel):
    """Per-container defaults and maximums in the tenant's namespace (a LimitRange)."""

    default_cpu: Quantity | None = Field(
        default=None, description="CPU limit of a container that sets none."
    )
    default_memory: Quantity | None = Field(
        default=None, description="Memory limit of a container that sets none."
    )
    default_request_cpu: Quantity | None = Field(
        default=None, description="CPU request of a container that sets none."
    )
    default_request_memory: Quantity | None = Field(
        default=None, description="Memory request of a container that sets none."
    )
    max_cpu: Quantity | None = Field(default=None, description="Most CPU one container may use.")
    max_memory: Quantity | None = Field(
        default=None, description="Most memory one container may use."
    )


class IngressPeer(SpecModel):
    """Pods allowed to reach the tenant's workload; set one selector or both."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.namespaceSelector) || has(self.podSelector)",
                "spec.network.ingressFrom: each entry needs namespaceSelector, podSelector or both",
            )
        )
    )

    namespace_selector: Labels | None = Field(
        default=None,
        description="Labels of the namespaces allowed ({} means every namespace).",
    )
    pod_selector: Labels | None = Field(
        default=None,
        description=(
            "Labels of the pods allowed ({} means every pod); without namespaceSelector, pods "
            "of the tenant's own namespace."
        ),
    )

    @model_validator(mode="after")
    def _needs_a_selector(self) -> IngressPeer:
        if self.namespace_selector is None and self.pod_selector is None:
            raise RuleViolation((), "needs namespaceSelector, podSelector or both")
        return self


class DatabaseEgressRule(SpecModel):
    """A range of addresses (and ports) the workload may connect to for its database."""

    cidr: Cidr = Field(description="IP range in CIDR notation, e.g. 10.20.0.0/16.")
    ports: Annotated[list[Port], ListSet()] = Field(
        min_length=1, max_length=16, description="TCP ports allowed, e.g. [5432]."
    )


class NetworkSpec(SpecModel):
    """Traffic allowed besides the defaults (everything else is denied by NetworkPolicies)."""

    ingress_from: list[IngressPeer] = Field(
        default_factory=list,
        max_length=16,
        description="Who may connect to the workload's port, besides the tenant's own pods.",
    )
    database_egress: list[DatabaseEgressRule] = Field(
        default_factory=list,
        max_length=16,
        description="Where the workload may connect to for PostgreSQL (besides DNS).",
    )


class EnvVar(SpecModel):
    """An environment variable of the CleoAI container."""

    name: EnvName = Field(description="The variable's name (a C identifier).")
    value: str = Field(default="", max_length=32768, description="The variable's value.")


class WorkloadSpec(SpecModel):
    """The CleoAI Deployment (with its Service) in the tenant's namespace."""

    image: Annotated[str, Matches(r"^\S+$", "a container image reference without spaces")] = Field(
        min_length=1,
        max_length=512,
        description="Container image of CleoAI, e.g. registry.example.com/cleoai:1.4.2.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None,
        description="When to pull the image; unset, Kubernetes decides from the tag.",
    )
    port: Port = Field(default=8080, description="The port CleoAI listens on (HTTP).")
    resources: ResourceRequirements | None = Field(
        default=None, description="CPU and memory requests and limits of the CleoAI container."
    )
    env: Annotated[list[EnvVar], ListMap("name")] = Field(
        default_factory=list,
        max_length=64,
        description="Extra environment variables (no secrets here: use spec.secrets).",
    )
    config: Annotated[
        dict[str, Annotated[str, Field(max_length=16384)]],
        KeysMatch(DATA_KEY_PATTERN, DATA_KEY_HINT, 253),
    ] = Field(
        default_factory=dict,
        max_length=64,
        description=(
            "CleoAI configuration, mounted as a ConfigMap (keys: letters, digits, '-', '_', '.')."
        ),
    )
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Number of pods; used only when spec.autoscaling.enabled is false.",
    )
    migrations: MigrationsSpec | None = Field(
        default=None,
        description=(
            "Schema migrations: a Job runs them (in the image) before the pods roll to a new "
            "image or migration command; unset, images roll at once."
        ),
    )


class AutoscalingSpec(SpecModel):
    """A HorizontalPodAutoscaler (autoscaling/v2) for the CleoAI Deployment."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.minReplicas) || !has(self.maxReplicas) "
                "|| self.minReplicas <= self.maxReplicas",
                "spec.autoscaling.maxReplicas must be greater than or equal to "
                "spec.autoscaling.minReplicas",
                field_path=".maxReplicas",
            )
        )
    )

    enabled: bool = Field(
        default=True, description="Scale with an HPA; false uses spec.workload.replicas."
    )
    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest pods.")
    max_replicas: int = Field(default=5, ge=1, le=1000, description="Most pods.")
    target_cpu_utilization_percentage: int | None = Field(
        default=None,
        ge=1,
        le=100,
        alias="targetCPUUtilizationPercentage",
        description=(
            "Average CPU use to aim for, in percent of the requests. Without any target or "
            f"metric the HPA aims for {DEFAULT_TARGET_CPU_UTILIZATION_PERCENTAGE}% CPU."
        ),
    )
    target_memory_utilization_percentage: int | None = Field(
        default=None,
        ge=1,
        le=100,
        alias="targetMemoryUtilizationPercentage",
        description="Average memory use to aim for, in percent of the requests.",
    )
    metrics: list[MetricSpec] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "More metrics, as autoscaling/v2 MetricSpecs (Resource, ContainerResource, Pods, "
            "Object, External), after the CPU and memory targets; checked here, then passed "
            "to the HPA."
        ),
    )
    behavior: HorizontalPodAutoscalerBehavior | None = Field(
        default=None,
        description=(
            "Scale-up and scale-down rules (stabilization windows, policies), as the "
            "autoscaling/v2 HPA's behavior."
        ),
    )

    @model_validator(mode="after")
    def _max_not_below_min(self) -> AutoscalingSpec:
        if self.max_replicas < self.min_replicas:
            raise RuleViolation(("maxReplicas",), f"must be >= minReplicas ({self.min_replicas})")
        return self

    def effective_cpu_target(self) -> int | None:
        """The CPU target the HPA gets: the one set, or the default when nothing else is."""
        if self.target_cpu_utilization_percentage is not None:
            return self.target_cpu_utilization_percentage
        if self.target_memory_utilization_percentage is None and not self.metrics:
            return DEFAULT_TARGET_CPU_UTILIZATION_PERCENTAGE
        return None


class PodDisruptionBudgetSpec(SpecModel):
    """A PodDisruptionBudget, so that node drains keep CleoAI serving."""

    min_available: IntOrPercent = Field(
        description="Pods that must stay up during voluntary disruptions: a count or '50%'."
    )


def _not_reserved(name: str) -> str:
    if name.startswith(RESERVED_PREFIX):
        raise ValueError(
            f"must not start with {RESERVED_PREFIX!r}: the operator's own objects use it"
        )
    return name


class SealedSecret(SpecModel):
    """A Secret in the tenant's namespace, given sealed (encrypted) so it can live in Git."""

    name: Annotated[
        DnsLabel,
        AfterValidator(_not_reserved),
        Rules(
            cel(
                f"!self.startsWith('{RESERVED_PREFIX}')",
                f"spec.secrets[].name must not start with '{RESERVED_PREFIX}': the operator's "
                "own Secrets use that prefix",
            )
        ),
    ] = Field(description="Name of the Secret to create (a DNS label).")
    data: Annotated[
        dict[str, Annotated[str, Field(min_length=1, max_length=1048576)]],
        KeysMatch(DATA_KEY_PATTERN, DATA_KEY_HINT, 253),
    ] = Field(
        min_length=1,
        max_length=64,
        description=(
            "Key to sealed value (from `cleo-operator seal`); only the operator can unseal it."
        ),
    )


class EncryptionSpec(SpecModel):
    """The tenant's keyring: data keys that encrypt its secrets and backups."""

    rotation_period: PositiveDuration | None = Field(
        default=None,
        description="Make a new key version this often, e.g. 90d; unset, keys are not rotated.",
    )


class FailoverPolicySpec(SpecModel):
    """How the tenant's database fails over to its standby site."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!self.automatic || has(self.standbySite)",
                "spec.failover.standbySite is required when spec.failover.automatic is true",
                field_path=".standbySite",
                reason="FieldValueRequired",
            )
        )
    )

    automatic: bool = Field(
        default=False,
        description="Fail over by itself (creating a CleoFailover) when the primary is lost.",
    )
    failover_delay: Duration = Field(
        default="60s",
        description="How long the primary must be unreachable before automatic failover.",
    )
    standby_site: DnsLabel | None = Field(
        default=None, description="The site that holds the standby, and becomes primary."
    )

    @model_validator(mode="after")
    def _automatic_needs_standby(self) -> FailoverPolicySpec:
        if self.automatic and self.standby_site is None:
            raise RuleViolation(("standbySite",), "is required when automatic is true")
        return self


class CleoTenantSpec(SpecModel):
    """The desired state of a tenant."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(oldSelf.namespace) == has(self.namespace)",
                "spec.namespace cannot be added or removed after creation: the tenant's "
                "namespace is fixed when the tenant is created",
                field_path=".namespace",
            ),
            cel(
                "!has(self.failover) || !has(self.failover.standbySite) || "
                "self.failover.standbySite != "
                f"(has(self.database) ? self.database.site : '{DEFAULT_SITE}')",
                "spec.failover.standbySite must differ from spec.database.site "
                "(the primary's site)",
                field_path=".failover.standbySite",
            ),
            cel(
                "!has(self.failover) || !self.failover.automatic || "
                "(has(self.database) && self.database.enabled)",
                "spec.failover.automatic needs spec.database.enabled: only the database fails over",
                field_path=".failover.automatic",
            ),
            cel(
                "!has(self.workload) || !has(self.workload.migrations) || "
                "(has(self.database) && self.database.enabled)",
                "spec.workload.migrations needs spec.database.enabled: migrations change the "
                "tenant's database",
                field_path=".workload.migrations",
            ),
        )
    )

    namespace: (
        Annotated[
            DnsLabel,
            Rules(
                cel("self == oldSelf", "spec.namespace is immutable"),
                cel(
                    "!(self in " + repr(list(SYSTEM_NAMESPACES)) + ") && "
                    f"!self.startsWith('{SYSTEM_NAMESPACE_PREFIX}')",
                    "spec.namespace must not be a namespace of Kubernetes itself "
                    f"(default or {SYSTEM_NAMESPACE_PREFIX}*)",
                ),
                cel(
                    "!(self in " + repr(list(DNS_ZONE_NAMESPACES)) + ")",
                    "spec.namespace must not be named like a zone of the cluster's DNS "
                    f"({' or '.join(DNS_ZONE_NAMESPACES)})",
                ),
            ),
            # null would be "set" for CEL's has() but unset for the operator: refuse null.
            Extra({"x-cleo-nullable": False}),
        ]
        | None
    ) = Field(
        default=None,
        description=(
            "The tenant's namespace; unset, cleo-<tenant name>. Fixed once the tenant exists. "
            "The operator uses it only if it creates it, or if the namespace carries this "
            "tenant's uid or the annotation cleoai.io/adopt=<tenant name>."
        ),
    )
    paused: bool = Field(
        default=False,
        description="Stop changing the tenant's objects (status is still reported).",
    )
    deletion_policy: DeletionPolicy = Field(
        default="Retain",
        description=(
            "On deletion of the tenant: Retain keeps the namespace, data and keys (orphaned); "
            "Delete removes them."
        ),
    )
    admins: Annotated[list[Subject], ListMap("kind", "name")] = Field(
        default_factory=list,
        max_length=64,
        description="Who may manage the tenant's namespace.",
    )
    viewers: Annotated[list[Subject], ListMap("kind", "name")] = Field(
        default_factory=list,
        max_length=64,
        description="Who may read the tenant's namespace (not its Secrets).",
    )
    quota: QuotaSpec | None = Field(default=None, description="Totals the tenant may use.")
    limits: LimitsSpec | None = Field(
        default=None, description="Per-container defaults and maximums."
    )
    network: NetworkSpec = Field(
        default_factory=NetworkSpec, description="Traffic allowed besides the defaults."
    )
    workload: WorkloadSpec | None = Field(
        default=None,
        description=(
            "The CleoAI workload; unset, the tenant gets its namespace, policies, secrets and "
            "database but no pods."
        ),
    )
    autoscaling: AutoscalingSpec = Field(
        default_factory=AutoscalingSpec, description="How the workload scales (on by default)."
    )
    pod_disruption_budget: PodDisruptionBudgetSpec | None = Field(
        default=None, description="Keep pods up during node drains; unset, no budget."
    )
    secrets: Annotated[list[SealedSecret], ListMap("name")] = Field(
        default_factory=list,
        max_length=32,
        description="Sealed secrets to unseal into the tenant's namespace.",
    )
    encryption: EncryptionSpec = Field(
        default_factory=EncryptionSpec, description="The tenant's encryption keyring."
    )
    database: DatabaseSpec = Field(
        default_factory=DatabaseSpec, description="The tenant's PostgreSQL database."
    )
    failover: FailoverPolicySpec = Field(
        default_factory=FailoverPolicySpec, description="Failover of the tenant's database."
    )

    @model_validator(mode="after")
    def _cross_field_rules(self) -> CleoTenantSpec:
        violations = []
        if self.namespace is not None and (
            self.namespace in SYSTEM_NAMESPACES
            or self.namespace.startswith(SYSTEM_NAMESPACE_PREFIX)
        ):
            violations.append(
                RuleViolation(
                    ("namespace",),
                    "must not be a namespace of Kubernetes itself "
                    f"(default or {SYSTEM_NAMESPACE_PREFIX}*)",
                )
            )
        if self.namespace in DNS_ZONE_NAMESPACES:
            violations.append(
                RuleViolation(
                    ("namespace",),
                    "must not be named like a zone of the cluster's DNS "
                    f"({' or '.join(DNS_ZONE_NAMESPACES)})",
                )
            )
        standby = self.failover.standby_site
        if standby is not None and standby == self.database.site:
            violations.append(
                RuleViolation(
                    ("failover", "standbySite"),
                    f"must differ from spec.database.site ({self.database.site!r}), "
                    "the primary's site",
                )
            )
        if self.failover.automatic and not self.database.enabled:
            violations.append(
                RuleViolation(
                    ("failover", "automatic"),
                    "needs spec.database.enabled: only the database fails over",
                )
            )
        if self.workload and self.workload.migrations and not self.database.enabled:
            violations.append(
                RuleViolation(
                    ("workload", "migrations"),
                    "needs spec.database.enabled: migrations change the tenant's database",
                )
            )
        if self.database.pooler.enabled and not self.database.enabled:
            violations.append(
                RuleViolation(
                    ("database", "pooler", "enabled"),
                    "needs spec.database.enabled: the pooler connects to the tenant's database",
                )
            )
        RuleViolations.raise_any(violations)
        return self


# --- status -----------------------------------------------------------------------------------

TenantPhase = Literal[
    "Pending", "Progressing", "Ready", "Degraded", "Paused", "Invalid", "Deleting", "Failed"
]


class ChildReference(StatusModel):
    """An object the operator made for the tenant."""

    api_version: str = Field(max_length=253, description="apiVersion of the object.")
    kind: str = Field(max_length=63, description="Kind of the object.")
    namespace: str = Field(
        default="", max_length=63, description="Namespace of the object; empty if cluster-scoped."
    )
    name: str = Field(max_length=253, description="Name of the object.")


class ReplicaStatus(StatusModel):
    """Pods of the CleoAI Deployment."""

    desired: int = Field(default=0, ge=0, description="Pods wanted (by the HPA or the spec).")
    ready: int = Field(default=0, ge=0, description="Pods passing their readiness probe.")
    available: int = Field(default=0, ge=0, description="Pods ready for minReadySeconds.")


class SecretStatus(StatusModel):
    """Whether one sealed secret was unsealed into its Secret."""

    name: str = Field(max_length=63, description="Name of the Secret.")
    ready: bool = Field(description="The Secret exists with the unsealed data.")
    reason: str | None = Field(
        default=None,
        max_length=1024,
        description="Why not, when not ready, as one CamelCase word (WrongContext, Tampered...).",
    )
    message: str | None = Field(
        default=None,
        max_length=1024,
        description="What failed, naming the Secret and key (never secret material).",
    )


class TenantDatabaseStatus(StatusModel):
    """Where the tenant's database is and how to reach it."""

    site: str | None = Field(default=None, max_length=63, description="Site of the primary.")
    name: str | None = Field(default=None, max_length=63, description="Database name.")
    user: str | None = Field(default=None, max_length=63, description="Role name.")
    secret_name: str | None = Field(
        default=None,
        max_length=253,
        description="Secret in the tenant's namespace with the connection details.",
    )
    last_password_rotation: Timestamp | None = Field(
        default=None, description="When the role's password last changed."
    )
    password_rotation_request: str | None = Field(
        default=None,
        max_length=253,
        description="The last value of the annotation cleoai.io/rotate-database-password "
        "that was handled (a rotation on demand).",
    )


class CleoTenantStatus(StatusBase):
    """What the operator observed of the tenant."""

    phase: TenantPhase | None = Field(
        default=None, description="A one-word summary for kubectl get."
    )
    namespace: str | None = Field(
        default=None, max_length=63, description="The tenant's namespace."
    )
    children: list[ChildReference] = Field(
        default_factory=list,
        max_length=256,
        description="Objects the operator made for the tenant.",
    )
    replicas: ReplicaStatus | None = Field(default=None, description="Pods of the workload.")
    key_version: int | None = Field(
        default=None, ge=0, description="Version of the keyring's current key."
    )
    last_rotation: Timestamp | None = Field(default=None, description="When the key last rotated.")
    next_rotation: Timestamp | None = Field(default=None, description="When the key rotates next.")
    secrets: Annotated[list[SecretStatus], ListMap("name")] = Field(
        default_factory=list, max_length=32, description="State of each sealed secret."
    )
    database: TenantDatabaseStatus | None = Field(
        default=None, description="The tenant's database."
    )
    orphaned: bool | None = Field(
        default=None,
        description="The tenant's objects were kept (deletionPolicy Retain) and cut loose.",
    )
    migrations: MigrationsStatus | None = Field(
        default=None, description="Schema migrations of the workload."
    )


# --- the kind ---------------------------------------------------------------------------------

RESOURCE: Final = ResourceDefinition(
    kind=KIND,
    plural=PLURAL,
    singular=SINGULAR,
    short_names=SHORT_NAMES,
    scope="Cluster",
    description=(
        "A CleoTenant is one customer of CleoAI: its namespace, quotas, admins, workload and "
        "autoscaling, sealed secrets, encryption keyring and database."
    ),
    spec_model=CleoTenantSpec,
    status_model=CleoTenantStatus,
    printer_columns=(
        PrinterColumn(
            name="Phase", type="string", json_path=".status.phase", description="Summary."
        ),
        PrinterColumn(
            name="Ready",
            type="string",
            json_path='.status.conditions[?(@.type=="Ready")].status',
            description="Whether the tenant works.",
        ),
        PrinterColumn(
            name="Namespace",
            type="string",
            json_path=".status.namespace",
            description="The tenant's namespace.",
        ),
        PrinterColumn(
            name="Replicas",
            type="integer",
            json_path=".status.replicas.ready",
            description="Ready pods of the workload.",
        ),
        PrinterColumn(
            name="Age",
            type="date",
            json_path=".metadata.creationTimestamp",
            description="Time since creation.",
        ),
    ),
    name_max_length=TENANT_NAME_MAX_LENGTH,
    name_reason="it names the namespace cleo-<name> and the database cleo_<name>",
)


def parse_tenant_spec(body_spec: Mapping[str, Any] | None) -> CleoTenantSpec:
    """Validate a CleoTenant's raw ``.spec``; raises `SpecError` naming the bad fields."""
    return parse_spec(CleoTenantSpec, KIND, body_spec)


def validate_tenant_spec_update(old: CleoTenantSpec, new: CleoTenantSpec) -> None:
    """Refuse what the API server's transition rules refuse: changing ``spec.namespace``."""
    if old.namespace != new.namespace:
        raise SpecError(
            KIND,
            [
                SpecIssue(
                    "spec.namespace",
                    "is fixed once the tenant exists (it cannot be set, changed or removed); "
                    "create a new tenant to move",
                )
            ],
        )

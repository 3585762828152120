"""The shapes of the Kubernetes objects render builds, as TypedDicts.

Each renderer builds its object as one of these, so mypy checks every key and value type
against the Kubernetes API (a misspelt ``readOnlyRootFileSystem`` is a type error, not a
silently ignored field), and then hands it to the kube layer as a plain `KubeObject`.

Only the fields the operator sets are declared: these are not complete API types, and a
field appears here only once a renderer needs it. Keys are the API's camelCase names;
``from`` is a Python keyword, hence the functional syntax for the ingress rule.

Optional keys are ``NotRequired`` rather than ``None``-valued on purpose: the API server
drops empty and null fields, and the kube layer's drift check (every key we send must be
present in the live object) would see a field we send as ``null`` or ``{}`` and the server
leaves out as drift on every reconcile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict

from cleo_operator.api.objects import KubeObject, OwnerReference

# --- shared --------------------------------------------------------------------------------


class ObjectMeta(TypedDict):
    name: str
    namespace: str
    labels: dict[str, str]
    ownerReferences: list[OwnerReference]
    annotations: NotRequired[dict[str, str]]


class LabelSelectorRequirement(TypedDict):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: NotRequired[list[str]]


class LabelSelector(TypedDict, total=False):
    """Both keys absent means "everything" (the API server drops an empty matchLabels)."""

    matchLabels: dict[str, str]
    matchExpressions: list[LabelSelectorRequirement]


# --- v1 ResourceQuota, LimitRange ----------------------------------------------------------


class ResourceQuotaSpec(TypedDict):
    hard: dict[str, str]


class ResourceQuota(TypedDict):
    apiVersion: Literal["v1"]
    kind: Literal["ResourceQuota"]
    metadata: ObjectMeta
    spec: ResourceQuotaSpec


class LimitRangeItem(TypedDict):
    type: Literal["Container"]
    default: NotRequired[dict[str, str]]
    defaultRequest: NotRequired[dict[str, str]]
    max: NotRequired[dict[str, str]]


class LimitRangeSpec(TypedDict):
    limits: list[LimitRangeItem]


class LimitRange(TypedDict):
    apiVersion: Literal["v1"]
    kind: Literal["LimitRange"]
    metadata: ObjectMeta
    spec: LimitRangeSpec


# --- networking.k8s.io/v1 NetworkPolicy ----------------------------------------------------

PolicyType = Literal["Ingress", "Egress"]
Protocol = Literal["TCP", "UDP", "SCTP"]


class IPBlock(TypedDict):
    cidr: str


class NetworkPolicyPeer(TypedDict, total=False):
    podSelector: LabelSelector
    namespaceSelector: LabelSelector
    ipBlock: IPBlock


class NetworkPolicyPort(TypedDict):
    protocol: Protocol
    port: int


NetworkPolicyIngressRule = TypedDict(
    "NetworkPolicyIngressRule",
    {"from": list[NetworkPolicyPeer], "ports": list[NetworkPolicyPort]},
    total=False,
)


class NetworkPolicyEgressRule(TypedDict, total=False):
    to: list[NetworkPolicyPeer]
    ports: list[NetworkPolicyPort]


class NetworkPolicySpec(TypedDict):
    podSelector: LabelSelector
    policyTypes: list[PolicyType]
    ingress: NotRequired[list[NetworkPolicyIngressRule]]
    egress: NotRequired[list[NetworkPolicyEgressRule]]


class NetworkPolicy(TypedDict):
    apiVersion: Literal["networking.k8s.io/v1"]
    kind: Literal["NetworkPolicy"]
    metadata: ObjectMeta
    spec: NetworkPolicySpec


# --- v1 ServiceAccount, rbac.authorization.k8s.io/v1 Role and RoleBinding -----------------

RBAC_GROUP: Literal["rbac.authorization.k8s.io"] = "rbac.authorization.k8s.io"
Verb = Literal["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]


class ServiceAccount(TypedDict):
    apiVersion: Literal["v1"]
    kind: Literal["ServiceAccount"]
    metadata: ObjectMeta
    automountServiceAccountToken: bool


class PolicyRule(TypedDict):
    apiGroups: list[str]
    resources: list[str]
    verbs: list[Verb]


class Role(TypedDict):
    apiVersion: Literal["rbac.authorization.k8s.io/v1"]
    kind: Literal["Role"]
    metadata: ObjectMeta
    rules: list[PolicyRule]


class RbacSubject(TypedDict):
    kind: Literal["User", "Group"]
    name: str
    apiGroup: Literal["rbac.authorization.k8s.io"]


class RoleRef(TypedDict):
    apiGroup: Literal["rbac.authorization.k8s.io"]
    kind: Literal["Role"]
    name: str


class RoleBinding(TypedDict):
    apiVersion: Literal["rbac.authorization.k8s.io/v1"]
    kind: Literal["RoleBinding"]
    metadata: ObjectMeta
    roleRef: RoleRef
    subjects: list[RbacSubject]


# --- v1 ConfigMap, apps/v1 Deployment, v1 Service ------------------------------------------


class ConfigMap(TypedDict):
    apiVersion: Literal["v1"]
    kind: Literal["ConfigMap"]
    metadata: ObjectMeta
    data: dict[str, str]


class SecretKeySelector(TypedDict):
    name: str
    key: str


class EnvVarSource(TypedDict):
    secretKeyRef: SecretKeySelector


class EnvVar(TypedDict):
    name: str
    value: NotRequired[str]
    valueFrom: NotRequired[EnvVarSource]


class LocalObjectReference(TypedDict):
    name: str


class EnvFromSource(TypedDict, total=False):
    configMapRef: LocalObjectReference
    secretRef: LocalObjectReference


class ContainerPort(TypedDict):
    name: str
    containerPort: int
    protocol: Protocol


class HTTPGetAction(TypedDict):
    path: str
    port: int | str


class Probe(TypedDict):
    httpGet: HTTPGetAction
    initialDelaySeconds: NotRequired[int]
    periodSeconds: int
    timeoutSeconds: int
    failureThreshold: int


class Capabilities(TypedDict):
    drop: list[str]


class SeccompProfile(TypedDict):
    type: Literal["RuntimeDefault"]


class ContainerSecurityContext(TypedDict):
    allowPrivilegeEscalation: bool
    readOnlyRootFilesystem: bool
    runAsNonRoot: bool
    capabilities: Capabilities


class PodSecurityContext(TypedDict):
    runAsNonRoot: bool
    runAsUser: int
    runAsGroup: int
    fsGroup: int
    seccompProfile: SeccompProfile


class VolumeMount(TypedDict):
    name: str
    mountPath: str
    readOnly: NotRequired[bool]


class ResourceRequirements(TypedDict, total=False):
    requests: dict[str, str]
    limits: dict[str, str]


class Container(TypedDict):
    name: str
    image: str
    imagePullPolicy: NotRequired[Literal["Always", "IfNotPresent", "Never"]]
    ports: list[ContainerPort]
    env: NotRequired[list[EnvVar]]
    envFrom: NotRequired[list[EnvFromSource]]
    resources: NotRequired[ResourceRequirements]
    readinessProbe: Probe
    livenessProbe: Probe
    securityContext: ContainerSecurityContext
    volumeMounts: list[VolumeMount]


class EmptyDirVolumeSource(TypedDict, total=False):
    sizeLimit: str


class KeyToPath(TypedDict):
    key: str
    path: str


class SecretVolumeSource(TypedDict):
    secretName: str
    defaultMode: int
    items: NotRequired[list[KeyToPath]]
    optional: NotRequired[bool]


class Volume(TypedDict):
    name: str
    emptyDir: NotRequired[EmptyDirVolumeSource]
    secret: NotRequired[SecretVolumeSource]


class PodSpec(TypedDict):
    serviceAccountName: str
    automountServiceAccountToken: bool
    securityContext: PodSecurityContext
    containers: list[Container]
    volumes: list[Volume]


class PodTemplateMeta(TypedDict):
    labels: dict[str, str]
    annotations: dict[str, str]


class PodTemplateSpec(TypedDict):
    metadata: PodTemplateMeta
    spec: PodSpec


class RollingUpdateDeployment(TypedDict):
    maxUnavailable: int | str
    maxSurge: int | str


class DeploymentStrategy(TypedDict):
    type: Literal["RollingUpdate"]
    rollingUpdate: RollingUpdateDeployment


class DeploymentSpec(TypedDict):
    replicas: NotRequired[int]
    revisionHistoryLimit: int
    selector: LabelSelector
    strategy: DeploymentStrategy
    template: PodTemplateSpec


class Deployment(TypedDict):
    apiVersion: Literal["apps/v1"]
    kind: Literal["Deployment"]
    metadata: ObjectMeta
    spec: DeploymentSpec


class ServicePort(TypedDict):
    name: str
    protocol: Protocol
    port: int
    targetPort: int | str


class ServiceSpec(TypedDict):
    type: Literal["ClusterIP"]
    selector: dict[str, str]
    ports: list[ServicePort]


class Service(TypedDict):
    apiVersion: Literal["v1"]
    kind: Literal["Service"]
    metadata: ObjectMeta
    spec: ServiceSpec


# --- autoscaling/v2 HorizontalPodAutoscaler, policy/v1 PodDisruptionBudget -----------------


class CrossVersionObjectReference(TypedDict):
    apiVersion: str
    kind: str
    name: str


class UtilizationTarget(TypedDict):
    type: Literal["Utilization"]
    averageUtilization: int


class ResourceMetricSource(TypedDict):
    name: Literal["cpu", "memory"]
    target: UtilizationTarget


class ResourceMetric(TypedDict):
    type: Literal["Resource"]
    resource: ResourceMetricSource


class HorizontalPodAutoscalerSpec(TypedDict):
    scaleTargetRef: CrossVersionObjectReference
    minReplicas: int
    maxReplicas: int
    # Ours are typed here; the spec's metrics and behavior are dumped by their models
    # (api.autoscaling), with autoscaling/v2's names.
    metrics: list[ResourceMetric | dict[str, Any]]
    behavior: NotRequired[dict[str, Any]]


class HorizontalPodAutoscaler(TypedDict):
    apiVersion: Literal["autoscaling/v2"]
    kind: Literal["HorizontalPodAutoscaler"]
    metadata: ObjectMeta
    spec: HorizontalPodAutoscalerSpec


class PodDisruptionBudgetSpec(TypedDict):
    minAvailable: int | str
    selector: LabelSelector
    unhealthyPodEvictionPolicy: Literal["IfHealthyBudget", "AlwaysAllow"]


class PodDisruptionBudget(TypedDict):
    apiVersion: Literal["policy/v1"]
    kind: Literal["PodDisruptionBudget"]
    metadata: ObjectMeta
    spec: PodDisruptionBudgetSpec


def as_object(obj: Mapping[str, Any]) -> KubeObject:
    """A typed object as the plain `KubeObject` the kube layer sends (same content)."""
    return dict(obj)

"""The typed shapes of a CleoBackup's objects (see render/k8s.py for why typed).

Apart from render/backup.py so that module holds the decisions (who may do what, where the
runner may go, what its pod gets) and this one only what Kubernetes' JSON looks like.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

from cleo_operator.render.k8s import (
    ContainerSecurityContext,
    EmptyDirVolumeSource,
    LocalObjectReference,
    ObjectMeta,
    PodSecurityContext,
    ResourceRequirements,
    RoleRef,
    SecretVolumeSource,
    VolumeMount,
)

__all__ = [
    "ClaimSource",
    "Container",
    "CronJob",
    "CronJobSpec",
    "EnvSource",
    "EnvVar",
    "FieldRef",
    "Job",
    "JobSpec",
    "JobTemplate",
    "KeyRef",
    "PodSpec",
    "PodTemplate",
    "ResourceRule",
    "Role",
    "RoleBinding",
    "ServiceAccountSubject",
    "TemplateMeta",
    "Volume",
]


class ResourceRule(TypedDict):
    apiGroups: list[str]
    resources: list[str]
    resourceNames: list[str]
    verbs: list[Literal["get", "patch"]]


class Role(TypedDict):
    apiVersion: Literal["rbac.authorization.k8s.io/v1"]
    kind: Literal["Role"]
    metadata: ObjectMeta
    rules: list[ResourceRule]


class ServiceAccountSubject(TypedDict):
    kind: Literal["ServiceAccount"]
    name: str
    namespace: str


class RoleBinding(TypedDict):
    apiVersion: Literal["rbac.authorization.k8s.io/v1"]
    kind: Literal["RoleBinding"]
    metadata: ObjectMeta
    roleRef: RoleRef
    subjects: list[ServiceAccountSubject]


class KeyRef(TypedDict):
    name: str
    key: str
    optional: NotRequired[bool]


class FieldRef(TypedDict):
    fieldPath: str


class EnvSource(TypedDict, total=False):
    secretKeyRef: KeyRef
    fieldRef: FieldRef


class EnvVar(TypedDict):
    name: str
    value: NotRequired[str]
    valueFrom: NotRequired[EnvSource]


class Container(TypedDict):
    name: str
    image: str
    imagePullPolicy: NotRequired[Literal["Always", "IfNotPresent", "Never"]]
    command: list[str]
    env: list[EnvVar]
    resources: NotRequired[ResourceRequirements]
    securityContext: ContainerSecurityContext
    terminationMessagePath: str
    terminationMessagePolicy: Literal["File", "FallbackToLogsOnError"]
    volumeMounts: list[VolumeMount]


class ClaimSource(TypedDict):
    claimName: str


class ServiceAccountTokenProjection(TypedDict):
    audience: str
    expirationSeconds: int
    path: str


class VolumeProjection(TypedDict):
    serviceAccountToken: ServiceAccountTokenProjection


class ProjectedSource(TypedDict):
    sources: list[VolumeProjection]


class Volume(TypedDict):
    name: str
    emptyDir: NotRequired[EmptyDirVolumeSource]
    secret: NotRequired[SecretVolumeSource]
    persistentVolumeClaim: NotRequired[ClaimSource]
    projected: NotRequired[ProjectedSource]


class PodSpec(TypedDict):
    serviceAccountName: str
    automountServiceAccountToken: bool
    restartPolicy: Literal["Never"]
    enableServiceLinks: bool
    securityContext: PodSecurityContext
    containers: list[Container]
    volumes: list[Volume]
    imagePullSecrets: NotRequired[list[LocalObjectReference]]


class TemplateMeta(TypedDict):
    labels: dict[str, str]


class PodTemplate(TypedDict):
    metadata: TemplateMeta
    spec: PodSpec


class JobSpec(TypedDict):
    backoffLimit: int
    template: PodTemplate
    activeDeadlineSeconds: NotRequired[int]


class Job(TypedDict):
    apiVersion: Literal["batch/v1"]
    kind: Literal["Job"]
    metadata: ObjectMeta
    spec: JobSpec


class JobTemplate(TypedDict):
    metadata: TemplateMeta
    spec: JobSpec


class CronJobSpec(TypedDict):
    schedule: str
    timeZone: NotRequired[str]
    suspend: bool
    concurrencyPolicy: Literal["Forbid", "Replace", "Allow"]
    startingDeadlineSeconds: int
    successfulJobsHistoryLimit: int
    failedJobsHistoryLimit: int
    jobTemplate: JobTemplate


class CronJob(TypedDict):
    apiVersion: Literal["batch/v1"]
    kind: Literal["CronJob"]
    metadata: ObjectMeta
    spec: CronJobSpec

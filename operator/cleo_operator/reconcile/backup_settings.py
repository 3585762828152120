"""How the operator runs CleoBackups, read from its environment once at start.

Why apart from the reconciler: these settings change when the chart or the runner pods'
needs change (an image, an egress rule, where volumes are mounted), never with how a
CleoBackup is reconciled. A wrong variable is refused at start with its name
(`BackupSettings.from_environment`), not found later in a reconcile.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from pydantic import ValidationError

from cleo_operator import __version__
from cleo_operator.api.backup import EGRESS_MIN_PREFIX
from cleo_operator.api.base import (
    DNS_SUBDOMAIN_HINT,
    DNS_SUBDOMAIN_PATTERN,
    ResourceRequirements,
    requests_over_limits,
)
from cleo_operator.api.cidr import metadata_overlap
from cleo_operator.backup.object_store import ReadLimits
from cleo_operator.core.environment import seconds_setting
from cleo_operator.reconcile.backup_source import ONE_OFF_MAX_AGE_SECONDS, ONE_OFF_TTL_SECONDS
from cleo_operator.reconcile.tracing_settings import TracingSettings
from cleo_operator.render.backup import (
    DEFAULT_IMAGE_REPOSITORY,
    ONE_OFF_DEADLINE_SECONDS,
    BackupPodSettings,
)
from cleo_operator.render.pull_secrets import pull_secret_copy_name

__all__ = [
    "API_SERVER_CIDRS_ENV",
    "EGRESS_CIDRS_ENV",
    "IMAGE_ENV",
    "IMAGE_PULL_POLICY_ENV",
    "IMAGE_PULL_SECRETS_ENV",
    "OBJECT_STORE_CIDRS_ENV",
    "ONE_OFF_TTL_ENV",
    "RESOURCES_ENV",
    "VOLUMES_DIR_ENV",
    "BackupSettings",
    "PullPolicy",
    "default_image",
]


IMAGE_ENV: Final = "CLEO_OPERATOR_IMAGE"
"""The image of the runner pods: the operator's own (the chart sets it)."""
IMAGE_PULL_POLICY_ENV: Final = "CLEO_OPERATOR_IMAGE_PULL_POLICY"
"""The runner pods' image pull policy (Always, IfNotPresent, Never); unset: the default."""
API_SERVER_CIDRS_ENV: Final = "CLEO_BACKUP_API_SERVER_CIDRS"
"""Comma-separated addresses of the API server the runner pods may reach (its endpoints as
NetworkPolicies see them); unset: what the operator finds at start (`with_api_server`)."""
EGRESS_CIDRS_ENV: Final = "CLEO_BACKUP_EGRESS_CIDRS"
"""The older name of `API_SERVER_CIDRS_ENV`, still read when that one is unset. It used to
default to 0.0.0.0/0 and to cover the object store too; object stores are now named per
CleoBackup (``destination.<type>.egress``)."""
OBJECT_STORE_CIDRS_ENV: Final = "CLEO_BACKUP_OBJECT_STORE_CIDRS"
"""Comma-separated ranges of the platform's object stores, which every object store runner
may reach on its endpoint's port besides its CleoBackup's ``destination.<type>.egress``;
unset: none."""
IMAGE_PULL_SECRETS_ENV: Final = "CLEO_BACKUP_IMAGE_PULL_SECRETS"
"""Comma-separated names of ``kubernetes.io/dockerconfigjson`` Secrets in the operator's
namespace that the runner pods pull their image with. A pod can only name Secrets of its own
namespace, so the operator copies each into the tenant namespaces that run backups, as
``cleo-pull-<name>``, and the pods name the copies (`reconcile.pull_secrets`); one missing
from the operator's namespace stops the start (`check_sources`). Unset: none (the chart
never sets it from the operator's own pull secrets, which tenant admins would read)."""
RESOURCES_ENV: Final = "CLEO_BACKUP_RESOURCES"
"""JSON of the runner container's resources (``{"requests": {"cpu": "100m"}, "limits":
{"memory": "1Gi"}}``, the shape of a CleoBackup's ``spec.resources``), for CleoBackups that
set none; unset: none (the namespace's LimitRange decides)."""
VOLUMES_DIR_ENV: Final = "CLEO_BACKUP_VOLUMES_DIR"
"""Where the operator sees backup volumes, as ``<dir>/<namespace>/<claim>``."""

ONE_OFF_TTL_ENV: Final = "CLEO_BACKUP_ONE_OFF_TTL_SECONDS"
"""Seconds a finished one-off made with ``spec.from`` is kept (`BackupSettings.
one_off_ttl_seconds`); unset: a day."""
ONE_OFF_MAX_AGE_ENV: Final = "CLEO_BACKUP_ONE_OFF_MAX_AGE_SECONDS"
"""Seconds a one-off made with ``spec.from`` may live at most, its Job running or not
(`BackupSettings.one_off_max_age_seconds`); unset: two days."""
ONE_OFF_DEADLINE_ENV: Final = "CLEO_BACKUP_ONE_OFF_DEADLINE_SECONDS"
"""``activeDeadlineSeconds`` of a ``spec.from`` one-off's Job
(`BackupPodSettings.one_off_deadline_seconds`); unset: six hours."""

PullPolicy = Literal["Always", "IfNotPresent", "Never"]
_PULL_POLICIES: Final[tuple[PullPolicy, ...]] = ("Always", "IfNotPresent", "Never")
_SECRET_NAME: Final = re.compile(DNS_SUBDOMAIN_PATTERN)
"""A DNS subdomain (dot-separated DNS labels, 253 characters at most), what a Secret's name
must be."""


def _list(env: Mapping[str, str], variable: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(variable, "").split(",") if item.strip())


def _cidrs(env: Mapping[str, str], variable: str, *, what: str) -> tuple[str, ...]:
    """The ranges of a comma-separated variable: as narrow as a CleoBackup's egress must be
    (``0.0.0.0/1,128.0.0.0/1`` is every address too), none reaching a metadata service."""
    cidrs = _list(env, variable)
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(
                f"{variable}: {cidr!r} is not an address range such as 10.0.0.0/8"
            ) from None
        if network.prefixlen == 0:
            raise ValueError(f"{variable}: {cidr!r} is every address; name {what}")
        shortest = EGRESS_MIN_PREFIX[network.version]
        if network.prefixlen < shortest:
            raise ValueError(
                f"{variable}: {cidr!r} is too wide (at least /{shortest} for "
                f"IPv{network.version}); name {what}"
            )
        overlap = metadata_overlap(cidr)
        if overlap is not None:
            raise ValueError(
                f"{variable}: {cidr!r} overlaps {overlap}, which holds the instance metadata "
                "service (or reaches IPv4 through IPv6); a runner reaches it only with its "
                "CleoBackup's instanceMetadata: true"
            )
    return cidrs


def _pull_secrets(env: Mapping[str, str]) -> tuple[str, ...]:
    names = _list(env, IMAGE_PULL_SECRETS_ENV)
    for name in names:
        if len(name) > 253 or not _SECRET_NAME.fullmatch(name):
            raise ValueError(
                f"{IMAGE_PULL_SECRETS_ENV}: {name!r} is not a Secret name ({DNS_SUBDOMAIN_HINT}, "
                "253 characters at most); separate names with commas"
            )
    return tuple(dict.fromkeys(names))


def _resources(env: Mapping[str, str]) -> ResourceRequirements | None:
    text = env.get(RESOURCES_ENV, "").strip()
    if not text:
        return None
    try:
        resources = ResourceRequirements.model_validate(json.loads(text))
    except json.JSONDecodeError as error:
        raise ValueError(f"{RESOURCES_ENV}: not JSON ({error.msg} at {error.pos})") from None
    except ValidationError as error:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'the value'}: {e['msg']}"
            for e in error.errors()
        )
        raise ValueError(
            f"{RESOURCES_ENV}: {where} (expected e.g. "
            '{"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}})'
        ) from None
    over = requests_over_limits(resources)
    if over is not None:
        raise ValueError(f"{RESOURCES_ENV}: {'.'.join(map(str, over.loc))}: {over.message}")
    return resources


def default_image() -> str:
    """``ghcr.io/cleoai/cleo-operator:<this version>``: the runner is the operator itself."""
    return f"{DEFAULT_IMAGE_REPOSITORY}:{__version__}"


def _default_pod() -> BackupPodSettings:
    return BackupPodSettings(image=default_image())


@dataclass(frozen=True, kw_only=True)
class BackupSettings:
    """How the operator runs CleoBackups; `from_environment` reads the operator's env."""

    pod: BackupPodSettings = field(default_factory=_default_pod)
    """What every runner pod gets (image, Secret names, egress); its pull secrets are the
    copies of `pull_secret_sources` (the reconciler sets them)."""
    pull_secret_sources: tuple[str, ...] = ()
    """Registry Secrets of the operator's namespace that are copied into tenant namespaces
    for the runner pods (``CLEO_BACKUP_IMAGE_PULL_SECRETS``)."""
    volumes_dir: Path | None = None
    """Where the operator sees backup volumes (``<dir>/<namespace>/<claim>``), for verifying
    PersistentVolumeClaim destinations; None: those are not verified."""
    verify_workers: int = 1
    """Verifications at once (each restores a database: CPU, disk and the site's I/O)."""
    store_read_limits: ReadLimits = field(default_factory=ReadLimits)
    """How long a verification waits on an object store (its endpoint is the tenant's
    choice): every request, listing and read is bounded, so that one slow store cannot
    hold the verification pool that all tenants share."""
    retry_seconds: float = 60.0
    """Try a verification that could not run (a site down) again after this long."""
    pending_requeue_seconds: float = 5.0
    """Call again this soon while a verification runs."""
    prerequisite_requeue_seconds: float = 15.0
    """Call again this soon while something the runner needs is missing (nothing else
    wakes the CleoBackup when the tenant's Secret appears)."""
    work_dir: Path | None = None
    """Where verification decrypts archives (default: the system's temporary folder)."""
    one_off_ttl_seconds: float = ONE_OFF_TTL_SECONDS
    """How long a one-off made with ``spec.from`` stays after its run ended (then the
    operator deletes it; its archive stays): what bounds, with the namespace's quota of
    CleoBackups, how often a tenant can ask for a backup."""
    one_off_max_age_seconds: float = ONE_OFF_MAX_AGE_SECONDS
    """How long a one-off made with ``spec.from`` may live at most after its creation,
    whatever its Job does (a pod kept from starting must not keep it for good)."""
    orphan_sweep_seconds: float = 300.0
    """How often, per namespace, runner objects no live CleoBackup owns are looked for
    (`reconcile.backup_orphans`): reads only, unless one is found."""
    pg_restore: str = "pg_restore"
    """The pg_restore verification runs."""

    def with_api_server(self, cidrs: tuple[str, ...]) -> BackupSettings:
        """These settings with the API server addresses found at start, unless set."""
        if self.pod.api_server_cidrs or not cidrs:
            return self
        return dataclasses.replace(self, pod=dataclasses.replace(self.pod, api_server_cidrs=cidrs))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> BackupSettings:
        """From the variables named in this module (the chart's ``backup`` values); ValueError
        names the variable that is wrong."""
        env = os.environ if environ is None else environ
        image = env.get(IMAGE_ENV, "").strip() or default_image()
        policy_text = env.get(IMAGE_PULL_POLICY_ENV, "").strip()
        policy: PullPolicy | None = None
        if policy_text:
            if policy_text not in _PULL_POLICIES:
                raise ValueError(
                    f"{IMAGE_PULL_POLICY_ENV}={policy_text!r}: use one of "
                    f"{', '.join(_PULL_POLICIES)}"
                )
            policy = policy_text
        variable = API_SERVER_CIDRS_ENV if env.get(API_SERVER_CIDRS_ENV) else EGRESS_CIDRS_ENV
        volumes = env.get(VOLUMES_DIR_ENV, "").strip()
        sources = _pull_secrets(env)
        return cls(
            pull_secret_sources=sources,
            pod=BackupPodSettings(
                image=image,
                image_pull_policy=policy,
                image_pull_secrets=tuple(pull_secret_copy_name(s) for s in sources),
                resources=_resources(env),
                api_server_cidrs=_cidrs(env, variable, what="the API server's addresses"),
                object_store_cidrs=_cidrs(
                    env, OBJECT_STORE_CIDRS_ENV, what="the object stores' addresses"
                ),
                one_off_deadline_seconds=int(
                    seconds_setting(env, ONE_OFF_DEADLINE_ENV, default=ONE_OFF_DEADLINE_SECONDS)
                ),
                # While the runner's traces are on (CLEO_BACKUP_TRACING), the collector.
                collector=TracingSettings.from_environment(env).jobs_collector,
            ),
            volumes_dir=Path(volumes) if volumes else None,
            one_off_ttl_seconds=seconds_setting(env, ONE_OFF_TTL_ENV, default=ONE_OFF_TTL_SECONDS),
            one_off_max_age_seconds=seconds_setting(
                env, ONE_OFF_MAX_AGE_ENV, default=ONE_OFF_MAX_AGE_SECONDS
            ),
        )

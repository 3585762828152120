"""Where tenants' workloads (and the backup runner's pods) send traces, read from the
operator's environment once at start (the chart's ``tracing.workloads`` and
``tracing.collector`` values).

Why apart from the reconcilers: these settings change with the platform's collector, never
with a tenant's spec. A wrong variable is refused at start with its name
(`TracingSettings.from_environment`), not found later in a reconcile: a collector peer that
could match pods a tenant admin labels (`render.network.collector_problem`), an endpoint
with credentials in it (every tenant admin reads the pods' environment), workload tracing
without a collector to reach.

Variables:

- ``CLEO_WORKLOAD_TRACING``: ``true`` gives every tenant's CleoAI pods the OTEL_* variables
  and egress to the collector; unset or ``false``: neither (the default).
- ``CLEO_WORKLOAD_OTLP_ENDPOINT``: their ``OTEL_EXPORTER_OTLP_ENDPOINT`` (an ``http`` or
  ``https`` URL); needed when workload tracing is on.
- ``CLEO_WORKLOAD_SERVICE_NAME``: their ``OTEL_SERVICE_NAME``; unset: ``cleoai``.
- ``CLEO_TRACING_COLLECTOR``: the collector as a NetworkPolicy peer, JSON in the shape of
  the chart's ``tracing.collector``: ``{"namespaceSelector": {"matchLabels": {...}},
  "podSelector": {"matchLabels": {...}}, "port": 4318, "grpcPort": 4317}`` or
  ``{"ipBlock": {"cidr": "192.0.2.10/32"}, "port": 4318}``; needed when workload tracing
  is on.
- ``CLEO_BACKUP_TRACING``: ``true`` when the backup runner's pods send traces (the chart's
  ``tracing.enabled``): with a collector named, their NetworkPolicy lets them reach it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from cleo_operator.core.environment import flag_setting
from cleo_operator.render.network import OTLP_HTTP_PORT, CollectorPeer
from cleo_operator.render.workload import DEFAULT_SERVICE_NAME, WorkloadTracing

__all__ = [
    "BACKUP_TRACING_ENV",
    "COLLECTOR_ENV",
    "WORKLOAD_ENDPOINT_ENV",
    "WORKLOAD_SERVICE_NAME_ENV",
    "WORKLOAD_TRACING_ENV",
    "TracingSettings",
    "read_collector",
]

WORKLOAD_TRACING_ENV: Final = "CLEO_WORKLOAD_TRACING"
WORKLOAD_ENDPOINT_ENV: Final = "CLEO_WORKLOAD_OTLP_ENDPOINT"
WORKLOAD_SERVICE_NAME_ENV: Final = "CLEO_WORKLOAD_SERVICE_NAME"
COLLECTOR_ENV: Final = "CLEO_TRACING_COLLECTOR"
BACKUP_TRACING_ENV: Final = "CLEO_BACKUP_TRACING"

_SERVICE_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
_COLLECTOR_KEYS: Final = frozenset(
    {"namespaceSelector", "podSelector", "ipBlock", "port", "grpcPort"}
)
_EXAMPLE: Final = (
    '{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}, '
    '"podSelector": {"matchLabels": {"app.kubernetes.io/name": "otel-collector"}}, "port": 4318}'
)


def _labels(value: Any, where: str) -> dict[str, str]:
    """The ``matchLabels`` of a selector (absent, null or ``{}``: none)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: give an object with matchLabels")
    unknown = set(value) - {"matchLabels"}
    if unknown:
        raise ValueError(
            f"{where}: {', '.join(sorted(unknown))} is not taken; name the collector by "
            "matchLabels only"
        )
    labels = value.get("matchLabels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise ValueError(f"{where}.matchLabels: give a map of label names to strings")
    return dict(labels)


def _port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"{where}: {value!r} is not a TCP port (1-65535)")
    return value


def read_collector(env: Mapping[str, str]) -> CollectorPeer | None:
    """``CLEO_TRACING_COLLECTOR`` as a peer; None when unset or when it names no peer (the
    chart's empty defaults). ValueError names the variable."""
    text = env.get(COLLECTOR_ENV, "").strip()
    if not text:
        return None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{COLLECTOR_ENV}: not JSON ({error.msg} at {error.pos}); e.g. {_EXAMPLE}"
        ) from None
    if not isinstance(raw, dict):
        raise ValueError(f"{COLLECTOR_ENV}: give a JSON object, e.g. {_EXAMPLE}")
    unknown = set(raw) - _COLLECTOR_KEYS
    if unknown:
        raise ValueError(
            f"{COLLECTOR_ENV}: unknown key {', '.join(sorted(unknown))} (takes "
            f"{', '.join(sorted(_COLLECTOR_KEYS))})"
        )
    namespace_labels = _labels(raw.get("namespaceSelector"), f"{COLLECTOR_ENV}: namespaceSelector")
    pod_labels = _labels(raw.get("podSelector"), f"{COLLECTOR_ENV}: podSelector")
    block = raw.get("ipBlock") or {}
    if not isinstance(block, dict) or set(block) - {"cidr"}:
        raise ValueError(f'{COLLECTOR_ENV}: ipBlock: give {{"cidr": "192.0.2.10/32"}} only')
    cidr = block.get("cidr") or None
    if cidr is not None and not isinstance(cidr, str):
        raise ValueError(f"{COLLECTOR_ENV}: ipBlock.cidr: give a range such as 192.0.2.10/32")
    if cidr is None and not namespace_labels and not pod_labels:
        return None
    ports = [_port(raw.get("port", OTLP_HTTP_PORT), f"{COLLECTOR_ENV}: port")]
    if raw.get("grpcPort") is not None:
        ports.append(_port(raw["grpcPort"], f"{COLLECTOR_ENV}: grpcPort"))
    try:
        return CollectorPeer(
            namespace_labels=namespace_labels,
            pod_labels=pod_labels,
            cidr=cidr,
            ports=tuple(sorted(set(ports))),
        )
    except ValueError as error:
        raise ValueError(f"{COLLECTOR_ENV}: {error}") from None


def _endpoint(env: Mapping[str, str]) -> str:
    text = env.get(WORKLOAD_ENDPOINT_ENV, "").strip()
    example = "e.g. http://otel-collector.observability.svc:4318"
    if not text:
        raise ValueError(
            f"{WORKLOAD_ENDPOINT_ENV}: workload tracing is on ({WORKLOAD_TRACING_ENV}=true); "
            f"name the OTLP endpoint the pods send to, {example}"
        )
    if any(c.isspace() or not c.isprintable() for c in text) or "$" in text:
        # `$(NAME)` in a pod's env value is a reference Kubernetes expands.
        raise ValueError(f"{WORKLOAD_ENDPOINT_ENV}={text!r}: no spaces or $ in the URL, {example}")
    try:
        url = urlsplit(text)
        host = url.hostname
        url.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError(f"{WORKLOAD_ENDPOINT_ENV}={text!r}: not a URL, {example}") from None
    if url.scheme not in ("http", "https") or not host:
        raise ValueError(f"{WORKLOAD_ENDPOINT_ENV}={text!r}: give an http(s) URL, {example}")
    if url.username is not None or url.password is not None:
        # Not repeated in the message: it would be the credential.
        raise ValueError(
            f"{WORKLOAD_ENDPOINT_ENV}: no credentials in the URL (every tenant admin reads "
            "the pods' environment)"
        )
    return text


def _service_name(env: Mapping[str, str]) -> str:
    text = env.get(WORKLOAD_SERVICE_NAME_ENV, "").strip() or DEFAULT_SERVICE_NAME
    if not _SERVICE_NAME.match(text):
        raise ValueError(
            f"{WORKLOAD_SERVICE_NAME_ENV}={text!r}: letters, digits, '.', '_', '-' and '/' "
            f"(128 at most), e.g. {DEFAULT_SERVICE_NAME}"
        )
    return text


@dataclass(frozen=True)
class TracingSettings:
    """Trace settings of what runs in tenant namespaces; `from_environment` reads them."""

    workloads: WorkloadTracing | None = None
    """Every tenant's CleoAI pods send traces there; None: workload tracing is off."""
    jobs_collector: CollectorPeer | None = None
    """The backup runner's pods may reach this collector; None: they may not."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> TracingSettings:
        """From the variables named in the module docstring; ValueError names the one that
        is wrong."""
        env = os.environ if environ is None else environ
        collector = read_collector(env)
        workloads: WorkloadTracing | None = None
        if flag_setting(env, WORKLOAD_TRACING_ENV):
            endpoint = _endpoint(env)
            if collector is None:
                raise ValueError(
                    f"{COLLECTOR_ENV}: workload tracing is on ({WORKLOAD_TRACING_ENV}=true); "
                    "name the collector the pods may reach (chart: tracing.collector), "
                    f"e.g. {_EXAMPLE}"
                )
            workloads = WorkloadTracing(
                endpoint=endpoint, collector=collector, service_name=_service_name(env)
            )
        jobs = collector if flag_setting(env, BACKUP_TRACING_ENV) else None
        return cls(workloads=workloads, jobs_collector=jobs)

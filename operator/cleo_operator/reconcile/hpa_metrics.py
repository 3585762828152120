"""Which metrics an HPA cannot read, named for people: the first words of the Autoscaling
condition. Pure functions over the live HPA object.

Why not just the HPA's own condition: it names the API it failed to reach, and the metric
only deep inside a long error (``the HPA was unable to compute the replica count: unable
to get metric requests_per_second: unable to fetch metrics from custom metrics API: ...``),
where clipping may cut it off. And while another metric still reads and says "scale up",
ScalingActive stays True although one metric is blind. So the HPA's ``spec.metrics`` is read
against its ``status.currentMetrics``: the controller writes one status per spec metric, in
order, and leaves an empty one (``type: ""``) for each metric it could not read. A status
of an older spec (``status.observedGeneration``) names no metric, and neither does a reason
that several metrics could have: a wrong name would send people to the wrong adapter.

Metric names are text from a spec (the CleoTenant's author; anyone who may edit the HPA in
between): each name is reduced to printable characters without whitespace and clipped, so
a name can neither break the message (a newline, a control character) nor crowd out the
rest of it. The whole message still passes the redactor when it becomes a condition.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = [
    "FAILED_GET_REASONS",
    "NAME_LIMIT",
    "api_hint",
    "metric_for_reason",
    "metric_label",
    "one_line",
    "unread_metrics",
    "without_pod_names",
]

NAME_LIMIT: Final = 64
"""Characters of one name (a metric, container or object) quoted in a message."""

FAILED_GET_REASONS: Final[dict[str, str]] = {
    "Resource": "FailedGetResourceMetric",
    "ContainerResource": "FailedGetContainerResourceMetric",
    "Pods": "FailedGetPodsMetric",
    "Object": "FailedGetObjectMetric",
    "External": "FailedGetExternalMetric",
}
"""The HPA controller's reason when it cannot read a metric of each source type."""

# Controls, format characters (bidirectional overrides and isolates, zero widths: they
# reorder or hide what `kubectl describe` shows), and every kind of space and line break.
_HIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


@functools.cache
def _hidden() -> re.Pattern[str]:
    """A run of hidden characters (`_HIDDEN_CATEGORIES`), as one character class built from
    this Python's Unicode tables once (a tenth of a second), so that a message of megabytes
    is scanned at the speed of a regular expression."""
    ranges: list[str] = []
    start = None
    for code in range(sys.maxunicode + 2):
        hidden = code <= sys.maxunicode and unicodedata.category(chr(code)) in _HIDDEN_CATEGORIES
        if hidden and start is None:
            start = code
        elif not hidden and start is not None:
            ranges.append(f"{re.escape(chr(start))}-{re.escape(chr(code - 1))}")
            start = None
    return re.compile(f"[{''.join(ranges)}]+")


def _replace_hidden(text: str, replacement: str, *, keep_space: bool) -> str:
    """`text` with each run of hidden characters (`_HIDDEN_CATEGORIES`) made `replacement`."""
    return _hidden().sub(
        lambda run: run.group() if keep_space and run.group() == " " else replacement, text
    )


def _name(value: Any) -> str:
    text = str(value or "?")
    # Clipped first, so that a name of megabytes costs no more than a short one.
    text = _replace_hidden(text[: NAME_LIMIT * 2], "?", keep_space=False)
    return text if len(text) <= NAME_LIMIT else text[: NAME_LIMIT - 1] + "…"


def one_line(text: str) -> str:
    """``text`` with every run of control, invisible and reordering characters, line breaks
    and spaces other than a single plain one made one space."""
    return _replace_hidden(text, " ", keep_space=True)


# The controller names one pod of many (the first of a map, in random order): quoted as is,
# the condition would change, and the tenant's status be written, at every HPA sync.
_OF_A_POD = re.compile(r"\bof [Pp]od \S+")
_A_POD = re.compile(r"\b[Pp]od [a-z0-9]+(-[a-z0-9]+)+\b")


def without_pod_names(text: str) -> str:
    """`text` with the names of pods made "a pod", so that it is the same whichever pod the
    HPA controller picked to quote."""
    return _A_POD.sub("a pod", _OF_A_POD.sub("of a pod", text))


def _source(metric: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    block = metric.get(key)
    return block if isinstance(block, Mapping) else {}


def _metric_name(source: Mapping[str, Any]) -> str:
    return _name(_source(source, "metric").get("name"))


def metric_label(metric: Mapping[str, Any]) -> str:
    """How a MetricSpec is named in messages: ``memory``, ``pods/requests_per_second``..."""
    type_ = metric.get("type")
    if type_ == "Resource":
        return _name(_source(metric, "resource").get("name"))
    if type_ == "ContainerResource":
        source = _source(metric, "containerResource")
        return f"{_name(source.get('name'))} of container {_name(source.get('container'))}"
    if type_ == "Pods":
        return f"pods/{_metric_name(_source(metric, 'pods'))}"
    if type_ == "Object":
        source = _source(metric, "object")
        described = _source(source, "describedObject")
        return (
            f"object/{_name(described.get('kind'))}/{_name(described.get('name'))}/"
            f"{_metric_name(source)}"
        )
    if type_ == "External":
        return f"external/{_metric_name(_source(metric, 'external'))}"
    return f"a metric of type {_name(type_)}"


def _metrics(hpa: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = (hpa.get("spec") or {}).get("metrics") or []
    return [m for m in raw if isinstance(m, Mapping)] if isinstance(raw, Sequence) else []


def _of_an_older_spec(hpa: Mapping[str, Any]) -> bool:
    """True when the controller's status was computed for an older spec of the HPA (it then
    says nothing of the metrics now there, even when they have the same shape)."""
    generation = (hpa.get("metadata") or {}).get("generation")
    observed = (hpa.get("status") or {}).get("observedGeneration")
    # Only recent Kubernetes versions keep an HPA's generation and observedGeneration
    # (kubernetes/kubernetes#138228, behind a feature gate); without both, the status
    # cannot tell, and its metrics are matched by shape only.
    return isinstance(observed, int) and isinstance(generation, int) and observed != generation


def unread_metrics(hpa: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The spec metrics the HPA's last computation could not read, in spec order.

    Empty when the status does not say: no computation yet, or a status of an older spec
    (its observedGeneration, another count of metrics, or a type that differs at the same
    place).
    """
    if _of_an_older_spec(hpa):
        return []
    metrics = _metrics(hpa)
    current = (hpa.get("status") or {}).get("currentMetrics")
    if not isinstance(current, Sequence) or len(current) != len(metrics):
        return []
    unread = []
    for spec, status in zip(metrics, current, strict=True):
        status_type = status.get("type") if isinstance(status, Mapping) else None
        if not status_type:
            unread.append(spec)
        elif status_type != spec.get("type"):
            return []
    return unread


def metric_for_reason(hpa: Mapping[str, Any], reason: str) -> Mapping[str, Any] | None:
    """The one spec metric whose source type fails with ``reason``, or None when the status
    is of an older spec or several metrics could be the one (a guess could name the wrong
    metric: better none)."""
    if _of_an_older_spec(hpa):
        return None
    candidates = [
        metric
        for metric in _metrics(hpa)
        if FAILED_GET_REASONS.get(str(metric.get("type"))) == reason
    ]
    return candidates[0] if len(candidates) == 1 else None


_HINTS: Final = (
    (
        ("custom.metrics.k8s.io", "custom metrics API"),
        "the cluster's custom metrics API does not answer (is an adapter such as "
        "prometheus-adapter installed? kubectl get apiservice v1beta1.custom.metrics.k8s.io)",
    ),
    (
        ("external.metrics.k8s.io", "external metrics API"),
        "the cluster's external metrics API does not answer (is an adapter such as KEDA "
        "installed? kubectl get apiservice v1beta1.external.metrics.k8s.io)",
    ),
    (
        ("metrics.k8s.io", "resource metrics API"),
        "the cluster's resource metrics API does not answer (is metrics-server installed? "
        "kubectl get apiservice v1beta1.metrics.k8s.io)",
    ),
)
_API_MISSING: Final = ("could not find the requested resource", "unable to fetch metrics from")


def api_hint(message: str) -> str | None:
    """What to install, when the HPA's message says a metrics API is not served."""
    if not any(words in message for words in _API_MISSING):
        return None
    for needles, hint in _HINTS:
        if any(needle in message for needle in needles):
            return hint
    return None

"""Metric names are text a spec's author writes and the Autoscaling condition quotes.

Who attacks: the author of a CleoTenant (any metric name the CRD accepts), or a tenant admin
who edits the tenant's HPA between two reconciles (the HPA's spec allows any name without
'/' or '%', newlines and megabytes included, and the HPA controller quotes it in its own
condition). What they want: a condition that lies (a forged line such as "Ready: True"),
terminal escapes in `kubectl describe`, a message that crowds out the real cause, or a
status write that fails so the tenant's status freezes.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from cleo_operator.core.redaction import MESSAGE_LIMIT
from cleo_operator.reconcile.hpa_metrics import NAME_LIMIT
from cleo_operator.reconcile.status import StatusBuilder
from cleo_operator.reconcile.tenant_status import observe_autoscaling
from e2e.cluster import LocalCluster
from tests.harness.specs import IMAGE, tenant_manifest

pytestmark = pytest.mark.security

FORGED = "queue\nReady: True\r\n\x1b[32mall good\x1b[0m\u2028" + "x" * 100_000


def external(name: str) -> dict[str, Any]:
    return {
        "type": "External",
        "external": {"metric": {"name": name}, "target": {"type": "Value", "value": 1}},
    }


def test_a_hostile_metric_name_in_the_hpa_cannot_forge_flood_or_freeze_the_condition() -> None:
    # The HPA as a tenant admin left it, and the controller's condition quoting the name.
    hpa = {
        "spec": {"metrics": [external(FORGED), external("password=hunter2")]},
        "status": {
            "currentMetrics": [{"type": ""}, {"type": ""}],
            "conditions": [
                {
                    "type": "ScalingActive",
                    "status": "False",
                    "reason": "FailedGetExternalMetric",
                    "message": f"unable to get external metric {FORGED}",
                }
            ],
        },
    }
    obs = observe_autoscaling(hpa, enabled=True)
    assert obs.reason == "FailedGetExternalMetric"
    assert len(obs.message) <= MESSAGE_LIMIT
    assert obs.message.startswith("external/queue?Ready:?True?")  # the name first, defanged
    first_name = obs.message.split(" ", 1)[0]
    assert len(first_name) <= len("external/") + NAME_LIMIT
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in obs.message), obs.message
    assert "\u2028" not in obs.message

    # Through the status writer: a valid condition, one line, the credential-looking name masked.
    builder = StatusBuilder({"status": {}}, 3, datetime.datetime.now(datetime.UTC))
    builder.condition("Autoscaling", obs)
    written = builder.base("Degraded")["conditions"][0]
    assert written["reason"] == "FailedGetExternalMetric"
    assert "hunter2" not in json.dumps(written)


@pytest.mark.parametrize(
    "char", ["\u202e", "\u2066", "\u2069", "\u200b", "\u00a0", "\u2028", "\ufeff", "\u061c"]
)
def test_an_invisible_or_reordering_character_never_reaches_the_condition(char: str) -> None:
    # The name as a tenant admin may write it into the HPA (the HPA's own rules allow it),
    # quoted by the controller in its message as well.
    name = f"queue{char}depth"
    hpa = {
        "spec": {"metrics": [external(name)]},
        "status": {
            "currentMetrics": [{"type": ""}],
            "conditions": [
                {
                    "type": "ScalingActive",
                    "status": "False",
                    "reason": "FailedGetExternalMetric",
                    "message": f"unable to get external metric {name}",
                }
            ],
        },
    }
    obs = observe_autoscaling(hpa, enabled=True)
    assert char not in obs.message, ascii(obs.message)
    assert obs.message.startswith("external/queue?depth: "), ascii(obs.message)


def test_a_forged_reason_cannot_make_the_status_write_fail() -> None:
    hpa = {
        "status": {
            "conditions": [
                {
                    "type": "ScalingActive",
                    "status": "False",
                    "reason": "not a reason\n!",
                    "message": "",
                }
            ]
        }
    }
    obs = observe_autoscaling(hpa, enabled=True)
    assert obs.reason == "ScalingActive"
    builder = StatusBuilder({"status": {}}, 1, datetime.datetime.now(datetime.UTC))
    builder.condition("Autoscaling", obs)  # the Condition model accepts it


@pytest.mark.cluster
@pytest.mark.parametrize(
    "name",
    [
        "queue\nReady: True",
        "queue\tdepth",
        "queue\x1b[31m",
        "q" * 254,
        "..",
        # Spaces and line breaks beyond ASCII (RE2's \s knows none of them), and the
        # invisible and bidirectional controls that reorder what `kubectl describe` shows.
        "queue\u00a0depth",
        "queue\u2028Ready: True",
        "queue\u0085depth",
        "queue\u202edepth",
        "queue\u2066depth",
        "queue\u200bdepth",
        "queue\u3000depth",
        "queue\ufeffdepth",
    ],
)
def test_the_api_server_refuses_metric_names_that_would_break_a_message(
    cluster: LocalCluster, crds_installed: None, name: str
) -> None:
    del crds_installed
    tenant = tenant_manifest(
        "hostile-metric",
        {"workload": {"image": IMAGE}, "autoscaling": {"metrics": [external(name)]}},
    )
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(tenant), check=False
    )
    assert result.returncode != 0, f"{name!r} was accepted"
    assert "spec.autoscaling.metrics[0].external.metric.name" in result.stderr, result.stderr

"""The CleoFailover model: one event, described completely, refused when malformed."""

from __future__ import annotations

from typing import Any

import pytest

from cleo_operator.api import failover
from cleo_operator.api.failover import CleoFailoverStatus, parse_failover_spec
from tests.unit.api_support import assert_refused_naming

GOOD: dict[str, Any] = {
    "tenant": "acme",
    "type": "Switchover",
    "targetSite": "eu-central",
    "rtoSeconds": 120,
    "rpoSeconds": 0,
    "maxLagBytes": 16777216,
    "dryRun": True,
}


def test_a_complete_spec_is_accepted_and_dumps_back_as_written() -> None:
    spec = parse_failover_spec(GOOD)
    assert (spec.type, spec.target_site, spec.dry_run) == ("Switchover", "eu-central", True)
    assert spec.to_api() == GOOD


def test_the_least_a_failover_needs() -> None:
    spec = parse_failover_spec({"tenant": "acme", "type": "Drill"})
    assert spec.target_site is None
    assert spec.dry_run is False


BAD = [
    ({"type": "Drill"}, "spec.tenant", "is required"),
    ({"tenant": "acme"}, "spec.type", "is required"),
    ({**GOOD, "type": "Migrate"}, "spec.type", "'Failover', 'Switchover' or 'Drill'"),
    ({**GOOD, "tenant": "Acme"}, "spec.tenant", "DNS label"),
    ({**GOOD, "targetSite": "eu central"}, "spec.targetSite", "DNS label"),
    ({**GOOD, "rtoSeconds": -1}, "spec.rtoSeconds", "greater than or equal to 0"),
    ({**GOOD, "rpoSeconds": 7 * 24 * 3600 + 1}, "spec.rpoSeconds", "less than or equal to"),
    ({**GOOD, "maxLagBytes": -5}, "spec.maxLagBytes", "greater than or equal to 0"),
    ({**GOOD, "force": True}, "spec.force", "not a field of this API"),
]


@pytest.mark.parametrize(("body", "field", "message"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_a_bad_spec_is_refused_naming_the_field(
    body: dict[str, Any], field: str, message: str
) -> None:
    assert_refused_naming(parse_failover_spec, body, field, message)


def test_status_round_trips_with_the_api_spelling_of_rto_and_rpo() -> None:
    written = {
        "observedGeneration": 1,
        "phase": "Succeeded",
        "conditions": [],
        "steps": [
            {
                "name": "fence",
                "state": "Succeeded",
                "startTime": "2024-05-01T12:00:00Z",
                "endTime": "2024-05-01T12:00:01Z",
            },
            {"name": "promote", "state": "Succeeded", "message": "eu-central is primary"},
            {"name": "verify", "state": "Skipped"},
        ],
        "plan": ["fence eu-west", "promote eu-central"],
        "measuredRTOSeconds": 41.7,
        "estimatedRPOSeconds": 0.0,
        "estimatedRPOBytes": 0,
        "newPrimary": "eu-central",
        "startTime": "2024-05-01T12:00:00Z",
        "completionTime": "2024-05-01T12:00:42Z",
    }
    status = CleoFailoverStatus.model_validate(written)
    assert status.measured_rto_seconds == 41.7
    assert status.to_api() == written


def test_status_refuses_a_phase_outside_the_four() -> None:
    with pytest.raises(ValueError, match="phase"):
        CleoFailoverStatus.model_validate({"phase": "Paused"})


def test_the_kind_is_described_once() -> None:
    assert (failover.RESOURCE.kind, failover.RESOURCE.plural) == ("CleoFailover", "cleofailovers")
    assert failover.RESOURCE.short_names == failover.SHORT_NAMES == ("cfo",)
    assert failover.RESOURCE.scope == "Namespaced"

"""What the tenant reconciler gets from the database part, decided without a site or a cluster."""

from __future__ import annotations

import datetime

from cleo_operator.reconcile.database import (
    CONDITION_TYPE,
    TLS_CONDITION_TYPE,
    DatabaseCondition,
    DatabaseOutcome,
    database_part_result,
)
from cleo_operator.reconcile.database_outcome import DatabaseView
from cleo_operator.reconcile.database_passwords import StoredPassword, password_fingerprint
from cleo_operator.reconcile.database_secret import credentials_secret_ref
from cleo_operator.reconcile.status import Observation
from cleo_operator.reconcile.tenant import TenantEvent

REF = credentials_secret_ref(namespace="tenant-acme", name="cleo-database")
CONNECTED = DatabaseCondition(status="True", reason="Connected", message="logs in")
TLS = Observation("True", "ServerVerified", "checked")


def connected() -> DatabaseOutcome:
    return DatabaseOutcome(
        condition=CONNECTED,
        status={"site": "eu", "secretName": "cleo-database"},
        fingerprint="f" * 32,
        secret_name="cleo-database",
        secret=REF,
        requeue_after=30.0,
        rotation_request="r1",
        events=("rotated the password",),
    )


def test_a_connected_database_gates_ready_rolls_the_pods_and_posts_its_events() -> None:
    result = database_part_result(connected(), tls=TLS, conditions=[])
    assert result.conditions == {CONDITION_TYPE: Observation("True", "Connected", "logs in")}
    assert result.informational == {TLS_CONDITION_TYPE: TLS}
    assert result.status["database"] == {
        "site": "eu",
        "secretName": "cleo-database",
        "passwordRotationRequest": "r1",
    }
    assert result.fingerprints == {"database": "f" * 32}
    assert result.database_secret == "cleo-database"
    assert result.requeue_after == 30.0
    # A password rotated is part of the audit trail (an Event and an `audit: true` line).
    assert result.events == [TenantEvent("Database", "rotated the password", audit=True)]


def test_a_secret_that_does_not_exist_is_not_handed_to_the_pods() -> None:
    outcome = DatabaseOutcome(
        condition=DatabaseCondition(status="False", reason="SiteUnavailable", message="down"),
        status={"site": "eu"},
        secret_name="cleo-database",
    )
    result = database_part_result(outcome, tls=None, conditions=None)
    assert result.database_secret is None
    assert result.fingerprints == {}
    assert TLS_CONDITION_TYPE in result.remove_conditions
    assert result.conditions[CONDITION_TYPE].status == "False"


def test_switched_off_after_it_was_on_says_so_instead_of_the_last_verdict() -> None:
    off = DatabaseOutcome(condition=None, status=None)
    was_on = [{"type": CONDITION_TYPE, "status": "True"}]
    result = database_part_result(off, tls=None, conditions=was_on)
    assert result.conditions[CONDITION_TYPE].reason == "NotEnabled"
    assert result.status == {"database": None}
    never_on = database_part_result(off, tls=None, conditions=[{"type": "Ready"}])
    assert never_on.conditions == {}


def test_an_outcome_that_wrote_nothing_reports_the_secret_as_it_is() -> None:
    password = "p" * 43
    live = {"metadata": {"name": "cleo-database"}, "data": {"PGPASSWORD": "cHBw"}}
    stored = StoredPassword(
        password=password,
        fingerprint=password_fingerprint(tenant="acme", password=password),
        rotated_at=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
        rotation_request="r1",
    )
    view = DatabaseView(tenant="acme", site="eu", secret=REF, live=live, stored=stored)
    pending = view.pending("eu", waited=2.0, requeue_after=3.0)
    assert pending.in_progress
    assert pending.requeue_after == 3.0
    assert pending.condition is not None
    assert "has not answered within 2.0s" in pending.condition.message
    assert pending.secret == REF
    assert pending.fingerprint is not None
    assert pending.rotation_request == "r1"
    assert pending.status == {
        "site": "eu",
        "name": "cleo_acme",
        "user": "cleo_acme",
        "secretName": "cleo-database",
        "lastPasswordRotation": "2025-01-01T00:00:00Z",
    }
    missing = DatabaseView(tenant="acme", site="eu", secret=REF, live=None, stored=None)
    nothing = missing.outcome(CONNECTED, requeue_after=None)
    assert nothing.secret is None
    assert nothing.fingerprint is None
    assert "secretName" not in (nothing.status or {})

"""One-offs made with spec.from: which CleoBackup they may run, what they run, when they go."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from cleo_operator.api.backup import CleoBackupStatus, parse_backup_spec
from cleo_operator.api.objects import KubeObject
from cleo_operator.reconcile.backup_source import (
    MAX_FINISHED_ONE_OFFS,
    MAX_UNFINISHED_ONE_OFFS,
    OneOff,
    SourceError,
    effective_spec,
    excess,
    one_off_expiry,
    resolve,
    source_spec,
    turn,
)
from tests.harness.specs import backup_manifest

NAMESPACE = "cleo-acme"
S3 = {
    "type": "s3",
    "s3": {
        "endpoint": "https://10.0.0.5:9000",
        "bucket": "platform-backups",
        "prefix": "acme",
        "credentialsSecret": "platform-s3",
        "egress": ["10.0.0.5/32"],
    },
}
NIGHTLY: dict[str, Any] = {
    "tenant": "acme",
    "schedule": "0 3 * * *",
    "timeZone": "Europe/Berlin",
    "destination": S3,
    "retention": {"keepDaily": 7},
    "verification": {"enabled": True, "everyNth": 2},
    "resources": {"limits": {"memory": "1Gi"}},
}
ONE_OFF = parse_backup_spec({"tenant": "acme", "from": "nightly"})
T0 = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)


def source(spec: dict[str, Any], name: str = "nightly") -> KubeObject:
    obj: KubeObject = backup_manifest(name, NAMESPACE, spec)
    return obj


def deleting(obj: KubeObject) -> KubeObject:
    """`obj` as the API server shows it once its deletion began (a finalizer holds it)."""
    obj["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    return obj


def test_a_one_off_runs_with_the_sources_destination_retention_and_verification() -> None:
    spec = resolve(ONE_OFF, source(NIGHTLY), namespace=NAMESPACE)
    assert spec.to_api() == {
        "tenant": "acme",
        "destination": S3,
        "retention": {"keepDaily": 7},
        "verification": {"enabled": True, "everyNth": 2},
        "resources": {"limits": {"memory": "1Gi"}},
        "suspend": False,
        "concurrencyPolicy": "Forbid",
        "historyLimit": 10,
    }
    # Once, now: never the source's schedule (nor its time zone, which needs one).
    assert (spec.schedule, spec.time_zone, spec.from_backup) == (None, None, None)


def test_resources_a_platform_admin_set_on_the_one_off_win() -> None:
    one_off = parse_backup_spec(
        {"tenant": "acme", "from": "nightly", "resources": {"limits": {"memory": "2Gi"}}}
    )
    checked = source_spec(one_off, source(NIGHTLY), namespace=NAMESPACE)
    assert checked.time_zone == "Europe/Berlin"
    spec = effective_spec(one_off, checked)
    assert spec.resources is not None
    assert spec.resources.limits is not None
    assert spec.resources.limits.memory == "2Gi"


def test_a_spec_without_from_is_its_own_effective_spec() -> None:
    spec = parse_backup_spec(NIGHTLY)
    assert resolve(spec, None, namespace=NAMESPACE) is spec


@pytest.mark.parametrize(
    ("found", "reason", "words"),
    [
        (None, "SourceNotFound", f"spec.from: CleoBackup {NAMESPACE}/nightly does not exist"),
        (
            source({**NIGHTLY, "tenant": "globex"}),
            "SourceMismatch",
            "backs up tenant globex, not acme (spec.tenant)",
        ),
        (
            source({"tenant": "acme", "from": "weekly"}),
            "SourceIsOneOff",
            "itself a one-off made with spec.from; name the CleoBackup it runs (weekly)",
        ),
        (source({"tenant": "acme"}), "SourceInvalid", "has an invalid spec"),
        (source({**NIGHTLY, "suspend": True}), "SourceSuspended", "is suspended"),
        (deleting(source(NIGHTLY)), "SourceDeleting", "is being deleted"),
    ],
    ids=["absent", "another-tenant", "chained", "invalid", "suspended", "deleting"],
)
def test_a_source_it_may_not_run_is_refused_with_a_reason(
    found: KubeObject | None, reason: str, words: str
) -> None:
    with pytest.raises(SourceError) as caught:
        resolve(ONE_OFF, found, namespace=NAMESPACE)
    assert caught.value.reason == reason
    assert words in caught.value.message


def test_nothing_of_another_tenants_source_leaks_into_the_refusal() -> None:
    with pytest.raises(SourceError) as caught:
        resolve(ONE_OFF, source({**NIGHTLY, "tenant": "globex"}), namespace=NAMESPACE)
    for secret in ("platform-backups", "platform-s3", "10.0.0.5"):
        assert secret not in caught.value.message


def status(*ends: datetime.datetime | None) -> CleoBackupStatus:
    return CleoBackupStatus.model_validate(
        {
            "history": [
                {
                    "startTime": "2030-01-01T00:00:00Z",
                    **({"endTime": f"{e:%Y-%m-%dT%H:%M:%SZ}"} if e else {}),
                }
                for e in ends
            ]
        }
    )


def test_a_one_off_goes_a_ttl_after_its_newest_run_ended() -> None:
    ended = T0 + datetime.timedelta(minutes=5)
    expiry = one_off_expiry(
        created=T0,
        status=status(T0 + datetime.timedelta(minutes=1), ended),
        active=False,
        ttl_seconds=3600,
    )
    assert expiry == ended + datetime.timedelta(hours=1)


def test_a_one_off_that_never_ran_goes_a_ttl_after_its_creation() -> None:
    expiry = one_off_expiry(created=T0, status=status(None), active=False, ttl_seconds=60)
    assert expiry == T0 + datetime.timedelta(seconds=60)


def test_a_one_off_whose_job_runs_stays() -> None:
    assert one_off_expiry(created=T0, status=status(T0), active=True, ttl_seconds=1) is None
    assert one_off_expiry(created=None, status=status(), active=False, ttl_seconds=1) is None


# -- the line of one-offs of a source ------------------------------------------------------


def _line(*phases: str) -> list[OneOff]:
    """One-offs created a second apart, oldest first, named ask-0, ask-1, ..."""
    return [
        OneOff(name=f"ask-{i}", created=f"2026-03-01T12:00:{i:02d}Z", phase=phase)  # type: ignore[arg-type]
        for i, phase in enumerate(phases)
    ]


def _turn(
    name: str, line: list[OneOff], *, running: bool = False, forbid: bool = True
) -> str | None:
    wait = turn(name, line, source="nightly", source_running=running, forbid=forbid)
    return None if wait is None else wait.reason


def test_only_the_oldest_waiting_one_off_may_start() -> None:
    line = _line("unstarted", "unstarted", "unstarted")
    assert [_turn(o.name, line) for o in line] == [None, "WaitingInLine", "WaitingInLine"]
    # Two reconciles that see the same line agree: never two starts at once.
    started = _line("running", "unstarted", "unstarted")
    assert [_turn(o.name, started) for o in started[1:]] == ["WaitingForOneOff"] * 2
    done = _line("finished", "unstarted", "unstarted")
    assert [_turn(o.name, done) for o in done[1:]] == [None, "WaitingInLine"]


def test_the_order_is_creation_then_name() -> None:
    line = [
        OneOff(name="b", created="2026-03-01T12:00:00Z", phase="unstarted"),
        OneOff(name="a", created="2026-03-01T12:00:00Z", phase="unstarted"),
        OneOff(name="0", created="2026-03-01T12:00:01Z", phase="unstarted"),
    ]
    assert [_turn(o.name, line) for o in line] == ["WaitingInLine", None, "WaitingInLine"]


def test_a_one_off_waits_for_its_sources_run_when_it_forbids_concurrency() -> None:
    line = _line("unstarted")
    assert _turn("ask-0", line, running=True) == "WaitingForSource"
    assert _turn("ask-0", line, running=True, forbid=False) is None
    wait = turn("ask-0", line, source="nightly", source_running=True, forbid=True)
    assert wait is not None
    assert "CleoBackup nightly" in wait.message
    assert "Forbid" in wait.message


def test_excess_removes_the_newest_waiting_and_the_oldest_finished() -> None:
    assert excess(_line("unstarted") * 1) == []
    waiting = _line(*(["running"] + ["unstarted"] * (MAX_UNFINISHED_ONE_OFFS + 2)))
    doomed = [name for name, _ in excess(waiting)]
    # The running one counts; the newer waiting ones beyond the cap go, never the running.
    assert doomed == [o.name for o in waiting[MAX_UNFINISHED_ONE_OFFS:]]
    finished = _line(*(["finished"] * (MAX_FINISHED_ONE_OFFS + 2)))
    gone = excess(finished)
    assert [name for name, _ in gone] == ["ask-1", "ask-0"]
    assert all("its archive stays" in why for _, why in gone)


def test_excess_never_removes_a_running_one_off() -> None:
    line = _line(*(["unstarted"] * MAX_UNFINISHED_ONE_OFFS + ["running"]))
    doomed = [name for name, _ in excess(line)]
    assert f"ask-{MAX_UNFINISHED_ONE_OFFS}" not in doomed
    assert doomed == [f"ask-{MAX_UNFINISHED_ONE_OFFS - 1}"]


def test_a_one_off_goes_at_its_max_age_whatever_its_job_does() -> None:
    # A tenant keeps the runner pod from starting (or ending): the Job stays active.
    cap = T0 + datetime.timedelta(hours=48)
    kept = one_off_expiry(
        created=T0, status=status(), active=True, ttl_seconds=60, max_age_seconds=48 * 3600
    )
    assert kept == cap
    # A run that ended late: the TTL would run past the cap, the cap wins.
    late = one_off_expiry(
        created=T0,
        status=status(T0 + datetime.timedelta(hours=47)),
        active=False,
        ttl_seconds=24 * 3600,
        max_age_seconds=48 * 3600,
    )
    assert late == cap
    # Otherwise the TTL after the run decides, as before.
    early = one_off_expiry(
        created=T0,
        status=status(T0 + datetime.timedelta(hours=1)),
        active=False,
        ttl_seconds=3600,
        max_age_seconds=48 * 3600,
    )
    assert early == T0 + datetime.timedelta(hours=2)


def test_tenant_one_offs_never_remove_the_platforms_one_off() -> None:
    tenants = [
        OneOff(name=f"t-{i}", created=f"2026-03-01T12:00:0{i}Z", phase="unstarted")
        for i in range(3)
    ]
    platform = OneOff(name="p", created="2026-03-01T12:00:09Z", phase="unstarted", platform=True)
    doomed = {name for name, _ in excess([*tenants, platform])}
    assert "p" not in doomed
    assert len(doomed) == 1  # the cap still holds: the newest tenant one-off goes
    # The platform's one-off is first in the line, however late it came.
    assert turn("p", [*tenants, platform], source="n", source_running=False, forbid=False) is None
    finished = [
        OneOff(name=f"f-{i}", created=f"2026-03-01T12:01:0{i}Z", phase="finished") for i in range(5)
    ]
    old = OneOff(name="old", created="2026-03-01T11:00:00Z", phase="finished", platform=True)
    assert "old" not in {name for name, _ in excess([*finished, old])}

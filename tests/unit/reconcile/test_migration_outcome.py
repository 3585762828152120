"""A migration's termination message read as hostile text (the tenant's image writes it)."""

from __future__ import annotations

from typing import Any

import pytest

from cleo_operator.reconcile.migration_outcome import (
    LAST_LINES,
    LAST_LINES_LIMIT,
    last_lines,
    pod_report,
    revision_from_message,
)


@pytest.mark.security
@pytest.mark.parametrize(
    ("message", "revision"),
    [
        ("revision=1a2b3c4d5e6f", "1a2b3c4d5e6f"),
        ("INFO upgrade done\nrevision=20260101_add_users\n", "20260101_add_users"),
        ("revision=V42.1\r\n", "V42.1"),
        ("revision=head:2+b", "head:2+b"),
        # Not the last line: a log that happens to print such a line is no report.
        ("revision=abc\nthen it failed", None),
        ("revision=", None),
        ("revision= abc", None),
        ("revision=abc def", None),
        ("revision=" + "a" * 65, None),
        ("revision=abc\x1b[2J", None),
        ("revision=abc\u202e", None),
        ("revision=\uff41\uff42\uff43", None),  # fullwidth letters
        ("revision=../../etc", None),
        ("Revision=abc", None),
        ("xrevision=abc", None),
        ("", None),
    ],
)
def test_only_an_exact_last_line_is_a_revision(message: str, revision: str | None) -> None:
    assert revision_from_message(message) == revision


@pytest.mark.security
def test_the_last_lines_are_redacted() -> None:
    message = (
        "connecting to postgresql://cleo_acme:s3cr3t-Pa55@db.example:5432/cleo_acme\n"
        "PGPASSWORD=hunter2 psql failed\n"
        "sqlalchemy.exc.OperationalError: relation users does not exist\n"
    )
    text = last_lines(message, secrets=["s3cr3t-Pa55"])
    assert "s3cr3t-Pa55" not in text
    assert "hunter2" not in text
    assert "relation users does not exist" in text


def test_the_last_lines_are_the_last_ten_without_control_characters() -> None:
    message = "\n".join(f"line {n}" for n in range(40)) + "\n\x1b[31mboom\x07\n"
    text = last_lines(message)
    assert "\x1b" not in text
    assert "\x07" not in text
    assert text.endswith("?[31mboom?")
    assert "line 31" in text
    assert "line 30" not in text
    assert text.count(" | ") == LAST_LINES - 1


def test_a_flood_is_clipped_from_the_front() -> None:
    message = "x" * 100_000 + "\nthe reason it failed"
    text = last_lines(message)
    assert len(text) <= LAST_LINES_LIMIT
    assert text.endswith("the reason it failed")


JOB = {"metadata": {"name": "cleo-migrate-abc", "uid": "job-uid"}}
LABELS = {"app.kubernetes.io/managed-by": "cleo-operator", "cleoai.io/migration": "abc"}


def pod(
    *, uid: str = "job-uid", labels: dict[str, str] = LABELS, message: str, start: str
) -> dict[str, Any]:
    return {
        "metadata": {
            "labels": labels,
            "ownerReferences": [{"kind": "Job", "uid": uid, "controller": True}],
        },
        "status": {
            "startTime": start,
            "containerStatuses": [
                {"name": "migrate", "state": {"terminated": {"exitCode": 0, "message": message}}},
            ],
        },
    }


@pytest.mark.security
def test_only_the_jobs_own_labelled_pods_are_read() -> None:
    own = pod(message="revision=real", start="2026-01-01T00:00:00Z")
    forged_owner = pod(uid="other", message="revision=forged", start="2026-01-01T00:05:00Z")
    unlabelled = pod(labels={}, message="revision=forged", start="2026-01-01T00:06:00Z")
    report = pod_report([forged_owner, unlabelled, own], JOB, labels=LABELS)
    assert report is not None
    assert report.message == "revision=real"
    assert report.exit_code == 0
    assert pod_report([forged_owner, unlabelled], JOB, labels=LABELS) is None


@pytest.mark.security
def test_only_the_migrate_container_is_read() -> None:
    # Another container of the pod (or an initContainer) may run what the tenant's image
    # chose; its report, exit code and digest are not the migration's.
    digest = "sha256:" + "ab" * 32
    own = pod(message="revision=real", start="2026-01-01T00:00:00Z")
    own["status"]["containerStatuses"] = [
        {
            "name": "sidecar",
            "imageID": f"evil.example/x@{digest}",
            "state": {"terminated": {"exitCode": 0, "message": "revision=forged"}},
        },
        {
            "name": "migrate",
            "imageID": f"registry.example.com/cleoai@{digest}",
            "state": {"terminated": {"exitCode": 0, "message": "revision=real"}},
        },
    ]
    own["status"]["initContainerStatuses"] = [
        {
            "name": "migrate",
            "imageID": f"evil.example/y@{digest}",
            "state": {"terminated": {"exitCode": 0, "message": "revision=init"}},
        }
    ]
    report = pod_report([own], JOB, labels=LABELS)
    assert report is not None
    assert report.message == "revision=real"
    assert report.image_id == f"registry.example.com/cleoai@{digest}"
    own["status"]["containerStatuses"] = own["status"]["containerStatuses"][:1]
    assert pod_report([own], JOB, labels=LABELS) is None

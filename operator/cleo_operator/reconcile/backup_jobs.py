"""What a backup's finished Job and its pods say about a run, when the pod did not say it.

Why apart from the reconciler: reading Job conditions and pod termination states is the
Job controller's and the kubelet's format, which changes with Kubernetes, not with how a
CleoBackup is reconciled. These functions read objects already fetched and make no
request, so each rule is tested without a cluster.

A pod's termination message is the pod's to write: only pods controlled by the Job (by
uid) are read, and only a message with the shape of the runner's report counts
(`backup.report.report_from_message`).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, cast

from cleo_operator.api.objects import KubeObject
from cleo_operator.backup.report import report_from_message
from cleo_operator.core.times import read_rfc3339
from cleo_operator.reconcile.backup_status import RunEntry, entry_from_report, failed_entry

__all__ = [
    "Ended",
    "JobState",
    "controlled_by",
    "ended_containers",
    "job_failure",
    "job_state",
    "latest_condition_time",
    "run_entry_for_job",
]

log = logging.getLogger(__name__)

JobState = Literal["active", "succeeded", "failed"]


def job_state(job: Mapping[str, Any]) -> JobState:
    """Whether the Job still runs, or how it ended (its Complete or Failed condition)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "succeeded"
        if condition.get("type") == "Failed":
            return "failed"
    return "active"


def job_failure(job: Mapping[str, Any]) -> tuple[str, str]:
    """The reason and message of the Job's Failed condition (defaults without one)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return (
                str(condition.get("reason") or "JobFailed"),
                str(condition.get("message") or "the Job failed"),
            )
    return "JobFailed", "the Job failed"


@dataclasses.dataclass(frozen=True)
class Ended:
    """A container that ended, in a pod of a Job: its ``terminated`` state and ``imageID``."""

    pod: Mapping[str, Any]
    terminated: Mapping[str, Any]
    image_id: str


def ended_containers(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    *,
    container: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Iterator[Ended]:
    """The ended containers of the pods `job` controls (by uid) and that wear `labels`,
    newest pod first: the one named `container`, or (None) the first that ended.

    The one reading of a Job's pods for both the backup runner's and the migrations'
    outcome: a pod's termination message is the pod's to write, so only the Job's own pods
    (by uid, never by a name or label anyone may put on a pod) are read."""
    own = [
        pod
        for pod in pods
        if controlled_by(pod, job)
        and all(
            ((pod.get("metadata") or {}).get("labels") or {}).get(k) == v
            for k, v in (labels or {}).items()
        )
    ]
    own.sort(key=lambda p: str((p.get("status") or {}).get("startTime") or ""), reverse=True)
    for pod in own:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if container is not None and status.get("name") != container:
                continue
            terminated = (status.get("state") or {}).get("terminated")
            if terminated:
                yield Ended(
                    pod, cast(Mapping[str, Any], terminated), str(status.get("imageID") or "")
                )
                break


def controlled_by(pod: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    """Whether `job` (by uid) is the controller of `pod`."""
    uid = job["metadata"].get("uid")
    return uid is not None and any(
        ref.get("controller") is True and ref.get("uid") == uid
        for ref in pod["metadata"].get("ownerReferences") or []
    )


def latest_condition_time(job: Mapping[str, Any]) -> datetime.datetime | None:
    """When the Job's newest condition changed; None without a readable one."""
    times = [
        read_rfc3339(c.get("lastTransitionTime"))
        for c in (job.get("status") or {}).get("conditions") or []
    ]
    present = [t for t in times if t is not None]
    return max(present) if present else None


def run_entry_for_job(
    job: KubeObject,
    pods: Sequence[KubeObject],
    *,
    state: JobState,
    now: datetime.datetime,
) -> RunEntry | None:
    """The run of a finished Job that its pod did not record, from what is left of it.

    `pods` are those labelled as the runner of the backup and as the Job's (labels the
    admission policy keeps to the operator and the Job controller); of them only the ones
    controlled by this Job (by uid) count. The `job-name` label alone is anyone's to put
    on a pod, with a forged report in its termination message. None: the Job succeeded,
    yet left nothing to record.
    """
    job_name = str(job["metadata"]["name"])
    namespace = str(job["metadata"].get("namespace", ""))
    job_status = job.get("status") or {}
    started = read_rfc3339(job_status.get("startTime")) or now
    ended = read_rfc3339(job_status.get("completionTime")) or latest_condition_time(job) or now
    detail = ""
    for ended_container in ended_containers(job, pods):
        pod, terminated = ended_container.pod, ended_container.terminated
        message = str(terminated.get("message") or "").strip()
        report = report_from_message(message) if message else None
        if report is not None:
            return entry_from_report(
                report,
                job=job_name,
                started=read_rfc3339((pod.get("status") or {}).get("startTime")) or started,
                ended=read_rfc3339(terminated.get("finishedAt")) or ended,
            )
        if not detail:
            detail = (
                f"its container ended with {terminated.get('reason') or 'Error'} "
                f"(exit code {terminated.get('exitCode')})"
            )
            if message:
                detail += f": {message[-400:]}"
    if state == "succeeded":
        log.warning(
            "Job %s/%s succeeded, but its pod left neither a report nor a history entry",
            namespace,
            job_name,
        )
        return None
    reason, job_message = job_failure(job)
    return failed_entry(
        reason=reason,
        message=(
            f"the backup pod of Job {job_name} ended without a report ({job_message}"
            + (f"; {detail}" if detail else "")
            + "); look at the Job's events and the pod's log"
        ),
        job=job_name,
        started=started,
        ended=ended,
    )

"""`kubectl cleo backup now TENANT [--from NAME] [--wait]`: a one-off backup, and its outcome.

The one-off is a CleoBackup `{tenant: T, from: SOURCE}` beside its source, the tenant's
scheduled CleoBackup: the operator runs it once with the source's destination, retention and
verification (docs/backups.md, one-off backups). Its name is the source's with `-now-` and
the time and three random characters, cut to fit `api.backup.NAME_MAX_LENGTH`, so two people
asking in the same second still get two backups. The plugin never chooses a destination:
a tenant admin who may create one-offs can only repeat what the platform set up.

`--wait` follows the one-off's status until it succeeded or failed: the phase, then the
run's Job, then the archive's size or why it failed. On a terminal this is a live rich
progress line; otherwise one plain line per change, for logs. It exits 1 when the backup
failed or `--timeout` passed (the backup itself goes on; the message says how to look).
"""

from __future__ import annotations

import argparse
import datetime
import secrets
import string
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cleo_operator.api.backup import NAME_MAX_LENGTH
from cleo_operator.api.objects import KubeObject
from cleo_operator.cli.common import CommandError
from cleo_operator.cli.plugin.backups import backup_summary
from cleo_operator.cli.plugin.output import Display, Table, human_size
from cleo_operator.cli.plugin.session import Session
from cleo_operator.cli.plugin.tenant import TenantPlace, find_tenant, tenant_backups
from cleo_operator.cli.plugin.tree import conditions_of
from cleo_operator.kube.kinds import BACKUP
from cleo_operator.render.backup import backup_object_name
from cleo_operator.render.meta import API_VERSION

__all__ = [
    "Progress",
    "choose_source",
    "cmd_backup_now",
    "observe",
    "one_off_manifest",
    "one_off_name",
    "register",
]

POLL_SECONDS: Final = 1.0
DEFAULT_TIMEOUT_SECONDS: Final = 900.0
_SUFFIX_ALPHABET: Final = string.ascii_lowercase + string.digits


def one_off_name(source: str, *, now: datetime.datetime, random: str | None = None) -> str:
    """`<source>-now-<HHMMSS><3 random>`, the source cut so the whole fits NAME_MAX_LENGTH."""
    rand = (
        random
        if random is not None
        else "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(3))
    )
    suffix = f"-now-{now.astimezone(datetime.UTC):%H%M%S}{rand}"
    head = source[: NAME_MAX_LENGTH - len(suffix)].rstrip("-.")
    return head + suffix


def _scheduled(backups: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [
        b
        for b in backups
        if (b.get("spec") or {}).get("schedule") and not (b.get("spec") or {}).get("from")
    ]


def choose_source(
    backups: Sequence[Mapping[str, Any]], *, tenant: str, namespace: str, wanted: str | None
) -> Mapping[str, Any]:
    """The scheduled CleoBackup to take the one-off from; an error naming the choices."""
    sources = _scheduled(backups)
    names = sorted(str(b["metadata"]["name"]) for b in sources)
    if wanted is not None:
        for backup in sources:
            if backup["metadata"]["name"] == wanted:
                return backup
        choices = ", ".join(names) if names else "none"
        raise CommandError(
            f"--from {wanted}: not a scheduled CleoBackup of tenant {tenant} in namespace "
            f"{namespace} (its scheduled CleoBackups: {choices})"
        )
    if not sources:
        raise CommandError(
            f"tenant {tenant} has no scheduled CleoBackup in namespace {namespace} to take a "
            "one-off backup from: a platform admin creates one (docs/backups.md)"
        )
    if len(sources) > 1:
        raise CommandError(
            f"tenant {tenant} has {len(sources)} scheduled CleoBackups ({', '.join(names)}): "
            "pick one with --from NAME"
        )
    return sources[0]


def one_off_manifest(
    *, tenant: str, source: Mapping[str, Any], now: datetime.datetime
) -> dict[str, Any]:
    """The one-off CleoBackup: the tenant and its source, nothing the platform chose."""
    meta = source["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": BACKUP.kind,
        "metadata": {
            "name": one_off_name(str(meta["name"]), now=now),
            "namespace": meta["namespace"],
        },
        "spec": {"tenant": tenant, "from": meta["name"]},
    }


@dataclass(frozen=True)
class Progress:
    """Where a one-off backup is, as its status says."""

    phase: str
    job: str | None = None
    size_bytes: int | None = None
    reason: str | None = None
    message: str | None = None
    done: bool = False
    succeeded: bool = False

    def line(self) -> str:
        """One line for people: phase, Job, then size or why it failed."""
        parts = [self.phase]
        if self.job:
            parts.append(f"job {self.job}")
        if self.succeeded and self.size_bytes is not None:
            parts.append(f"archive {human_size(self.size_bytes)}")
        if self.reason and not self.succeeded:
            parts.append(f"{self.reason}: {self.message}" if self.message else self.reason)
        return ", ".join(parts)


def observe(obj: Mapping[str, Any]) -> Progress:
    """The progress of a one-off from its CleoBackup (pure).

    The run's own record (written by the runner when it ends) decides the outcome even
    before the reconciler has moved the phase; the phase shown then is the outcome's.
    """
    status = obj.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    history = status.get("history") or []
    run: Mapping[str, Any] = history[0] if history else {}
    ready = conditions_of(obj).get("Ready") or {}
    last = status.get("lastBackup") or {}
    failed = phase in ("Failed", "Invalid") or run.get("succeeded") is False
    succeeded = not failed and (phase == "Succeeded" or run.get("succeeded") is True)
    if succeeded:
        phase = "Succeeded"
    elif failed and phase != "Invalid":
        phase = "Failed"
    job = run.get("job")
    if job is None and phase == "Running":
        # The run's record comes at its end; the Job's name is known from the start.
        source = (obj.get("spec") or {}).get("from")
        job = backup_object_name(
            str((obj.get("metadata") or {}).get("name")), source=str(source) if source else None
        )
    reason, message = run.get("reason"), run.get("message")
    if not run or not (succeeded or failed):
        # Waiting (NoBackupYet) or blocked (SourceNotFound...): the Ready condition says
        # which; while the Job runs, the Job is the news.
        reason, message = (
            (None, None)
            if phase == "Running"
            else (
                ready.get("reason"),
                ready.get("message"),
            )
        )
    return Progress(
        phase=phase,
        job=job,
        size_bytes=run.get("sizeBytes", last.get("sizeBytes")),
        reason=reason,
        message=message,
        done=succeeded or failed,
        succeeded=succeeded,
    )


def _follow(
    session: Session,
    created: KubeObject,
    *,
    timeout: float,
    report: Callable[[Progress], None],
) -> Progress:
    """Read the one-off every POLL_SECONDS until it is done or `timeout` passed."""
    meta = created["metadata"]
    deadline = time.monotonic() + timeout
    progress = observe(created)
    report(progress)
    while not progress.done:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(POLL_SECONDS, remaining))
        current = session.get(BACKUP, meta["name"], namespace=meta["namespace"])
        if current is None:
            raise CommandError(
                f"CleoBackup {meta['namespace']}/{meta['name']} was deleted while waiting"
            )
        progress = observe(current)
        report(progress)
    return progress


def _wait(display: Display, session: Session, created: KubeObject, timeout: float) -> Progress:
    name = f"{created['metadata']['namespace']}/{created['metadata']['name']}"
    if display.rich and display.format == "table":
        from rich.console import Console  # noqa: PLC0415 - only on a terminal
        from rich.progress import Progress as Bar  # noqa: PLC0415
        from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: PLC0415
        from rich.text import Text  # noqa: PLC0415

        console = Console(file=display.stream, highlight=False)
        with Bar(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,  # the live line goes; the outcome is printed in full below
        ) as bar:
            task = bar.add_task(f"backup {name}: Pending", total=None)

            def show(progress: Progress) -> None:
                bar.update(task, description=f"backup {name}: {progress.line()}")

            final = _follow(session, created, timeout=timeout, report=show)
        style = "green" if final.succeeded else ("red" if final.done else "yellow")
        console.print(Text(f"backup {name}: {final.line()}", style=style), soft_wrap=True)
        return final
    seen: list[str] = []

    def plain(progress: Progress) -> None:
        line = progress.line()
        if not seen or seen[-1] != line:
            seen.append(line)
            if display.format == "table":
                display.write(f"backup {name}: {line}")

    return _follow(session, created, timeout=timeout, report=plain)


def cmd_backup_now(args: argparse.Namespace) -> int:
    session: Session = args.connect()
    display: Display = args.display
    place: TenantPlace = find_tenant(session, args.tenant, namespace=args.namespace)
    source = choose_source(
        tenant_backups(session, place),
        tenant=place.name,
        namespace=place.namespace,
        wanted=args.source,
    )
    manifest = one_off_manifest(
        tenant=place.name, source=source, now=datetime.datetime.now(datetime.UTC)
    )
    created = session.create(manifest, kind=BACKUP)
    name = f"{created['metadata']['namespace']}/{created['metadata']['name']}"
    if not args.wait:
        table = Table(columns=("namespace", "name", "from", "phase"))
        table.add(
            created["metadata"]["namespace"],
            created["metadata"]["name"],
            str(source["metadata"]["name"]),
            "Pending",
        )
        display.show({"created": backup_summary(created)}, table)
        return 0
    progress = _wait(display, session, created, args.timeout)
    if display.format != "table":
        final = session.get(
            BACKUP, created["metadata"]["name"], namespace=created["metadata"]["namespace"]
        )
        display.data(
            {
                "created": backup_summary(final or created),
                "done": progress.done,
                "succeeded": progress.succeeded,
            }
        )
    if not progress.done:
        raise CommandError(
            f"CleoBackup {name} did not finish within {args.timeout:.0f}s ({progress.line()}); it "
            f"goes on: kubectl cleo backups {place.name}"
        )
    if not progress.succeeded:
        raise CommandError(f"CleoBackup {name} failed: {progress.line()}")
    return 0


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (e.g. 90s, 15m, 1h)"
        ) from None


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> argparse.ArgumentParser:
    group = sub.add_parser("backup", help="act on a tenant's backups (backup now)")
    actions = group.add_subparsers(dest="backup_command", required=True, metavar="ACTION")
    text = "create a one-off backup of the tenant from its scheduled CleoBackup"
    parser = actions.add_parser("now", parents=parents, help=text, description=text)
    parser.add_argument("tenant", metavar="TENANT", help="the CleoTenant's name")
    parser.add_argument(
        "--from",
        dest="source",
        metavar="NAME",
        help="the scheduled CleoBackup to take it from (when the tenant has several)",
    )
    parser.add_argument("--wait", action="store_true", help="follow it until it ends")
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT_SECONDS,
        help="how long --wait waits, e.g. 90s, 15m (default 15m)",
    )
    parser.set_defaults(command=cmd_backup_now)
    return parser

"""`cleo-operator backup run|list|verify|prune` and `cleo-operator restore`: the command line.

`backup run --backup NAMESPACE/NAME` is what every CleoBackup's CronJob (or one-off Job)
runs, in the operator's own image, as the backup's own ServiceAccount. It reads its
CleoBackup (tenant, retention, time zone), backs up (`backup.commands.backup_run`), prunes
after a success (never in a one-off made with ``spec.from``), writes its JSON report to the
termination message, and records the run in the CleoBackup's status
(`reconcile.backup_status.record_run`). Its inputs come as a pod gets them: the database
login in libpq's variables (from the tenant's database Secret), the keyring as its Secret
mounted read-only (`--keyring-dir`), the destination as a folder on the mounted volume or an
object store's URL (``s3://``, ``gs://``, ``azure://``; credentials in the variables
`backup.object_stores` reads, or the pod's workload identity).

Every run ends in the history, including one that cannot even start (a keyring that does
not load, a missing variable): a failed run is recorded, exits 1, and never stops the
next scheduled one. If the status cannot be written, the report in the termination message
is still there, and the operator records the run from it.

Without ``--backup`` (``--tenant`` instead) the same backup runs without a cluster, for
people and scripts; retention then comes from the ``--keep-*`` options.

`restore --archive ID --into DSN` restores one backup into a new, empty database: the
manifest is authenticated and the archive decrypted and checked before the target is
touched (`backup.restore`). Give the password in ``PGPASSWORD``, not in the DSN: a
command line is visible to every user of the machine. A dump is its tenant's code, so the
``--into`` login must be unprivileged (for example the tenant's own role owning a fresh
database): a superuser, or a login with CREATEROLE, BYPASSRLS or REPLICATION, is refused
unless ``--allow-privileged-target``.

Verification needs CREATEDB and CREATEROLE on the site: with the admin's login it creates
a throwaway unprivileged login and a scratch database that login owns, and restores and
reads as that login (`backup.scratch`); the operator runs it with the site admin's login;
`backup verify` is for people with such a login (``--admin DSN``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Final

from cleo_operator.api.backup import CleoBackupSpec, parse_backup_spec
from cleo_operator.api.errors import SpecError
from cleo_operator.backup.commands import (
    backup_list,
    backup_prune,
    backup_run,
    backup_verify,
    load_keyring_dir,
    storage_from_destination,
)
from cleo_operator.backup.connection import ConnectionInfo
from cleo_operator.backup.errors import BackupError
from cleo_operator.backup.manifest import MadeBy
from cleo_operator.backup.report import (
    PruneReport,
    RunReport,
    exit_code,
    prune_report,
    write_report,
)
from cleo_operator.backup.restore import restore_archive
from cleo_operator.backup.retention import RetentionPolicy, prune
from cleo_operator.backup.storage import Storage
from cleo_operator.cli.common import COMMAND_HELP, CommandError, guarded, local_user, out
from cleo_operator.crypto import CryptoError, Keyring
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import BACKUP
from cleo_operator.observability.tracing import context_from_environment, span
from cleo_operator.reconcile.backup_source import SourceError, effective_spec, source_spec
from cleo_operator.reconcile.backup_status import entry_from_report, record_run
from cleo_operator.render.backup import JOB_NAME_ENV, VOLUME_MOUNT

__all__ = ["register", "run_backup_for"]

log = logging.getLogger("cleo_operator.backup")

KEYRING_DIR_ENV: Final = "CLEO_KEYRING_DIR"

KEEP_RULES: Final = {
    "last": "the newest N backups",
    "hourly": "the newest backup of each of the last N hours",
    "daily": "the newest backup of each of the last N days",
    "weekly": "the newest backup of each of the last N weeks",
    "monthly": "the newest backup of each of the last N months",
}
"""The ``--keep-RULE N`` options, as `RetentionPolicy` takes them (``keep_RULE``)."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _failed(tenant: str, reason: str, message: str) -> RunReport:
    return {"outcome": "Failed", "reason": reason, "message": message, "tenant": tenant}


def _keyring(path: Path | None) -> Keyring:
    if path is None:
        raise CommandError(
            f"name the tenant keyring directory with --keyring-dir (or ${KEYRING_DIR_ENV})"
        )
    return load_keyring_dir(path)


def _time_zone(name: str | None) -> datetime.tzinfo:
    if not name:
        return datetime.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        log.warning("time zone %s is unknown here; retention counts days in UTC", name)
        return datetime.UTC


def _login(dsn: str, *, option: str) -> ConnectionInfo:
    """A DSN from the command line, with the password from PGPASSWORD when it has none."""
    try:
        info = ConnectionInfo.from_dsn(dsn)
    except ValueError as exc:
        raise CommandError(f"{option}: {exc}") from None
    password = os.environ.get("PGPASSWORD")
    if info.password is None and password:
        info = info.with_login(user=info.user, password=password)
    return info


# -- backup run -------------------------------------------------------------------------------


def run_backup_for(
    *,
    tenant: str,
    destination: str,
    keyring_dir: Path | None,
    retention: RetentionPolicy,
    time_zone: str | None = None,
    work_dir: Path | None = None,
    environ: dict[str, str] | None = None,
    now: Callable[[], datetime.datetime] = _now,
    volume_mount: str | os.PathLike[str] | None = None,
    made_by: MadeBy | None = None,
) -> RunReport:
    """Back up as a CleoBackup's runner does, then prune by `retention` after a success.

    `made_by` (the CleoBackup this runs for) goes into the manifest. A one-off's run
    (`MadeBy.one_off`) never prunes: pruning is the scheduled runs' job, so that asking for
    one-offs can never cost a scheduled archive (`backup.retention`).

    `volume_mount`: where the runner pod mounts a volume destination (the CronJob passes
    the mount it renders); a folder destination must be under it, and no symbolic link
    below it is followed (tenant admins can write the volume through pods of their own).

    `time_zone` (the schedule's) decides what a day, week and month are for retention.
    Every problem becomes a report with outcome Failed and a reason, never an exception:
    the run must reach the history whatever went wrong.
    """
    try:
        keyring = _keyring(keyring_dir)
    except (CryptoError, CommandError) as exc:
        return _failed(tenant, "KeyringUnavailable", str(exc))
    try:
        source = ConnectionInfo.from_environment(environ)
    except ValueError as exc:
        return _failed(
            tenant,
            "DatabaseLoginMissing",
            f"the database login is incomplete: {exc}; the pod gets it from the tenant's "
            "database Secret",
        )
    try:
        storage = storage_from_destination(destination, environ=environ, volume_mount=volume_mount)
    except ValueError as exc:
        return _failed(tenant, "DestinationInvalid", str(exc))
    report = backup_run(
        tenant=tenant,
        source=source,
        storage=storage,
        keyring=keyring,
        work_dir=work_dir,
        made_by=made_by,
    )
    one_off = made_by is not None and made_by.one_off
    if report["outcome"] == "Succeeded" and not retention.keeps_everything and not one_off:
        with span("backup prune"):
            report["prune"] = _prune(
                storage, tenant, retention, _time_zone(time_zone), now(), keyring=keyring
            )
    return report


def _prune(
    storage: Storage,
    tenant: str,
    policy: RetentionPolicy,
    tz: datetime.tzinfo,
    now: datetime.datetime,
    *,
    keyring: Keyring,
) -> PruneReport:
    try:
        # The schedule's time zone decides what "a day" is for keepDaily and the like.
        result = prune(storage, tenant=tenant, policy=policy, keyring=keyring, now=now, tz=tz)
    except BackupError as exc:
        # A prune that cannot run costs nothing: the backup is made, the next run prunes.
        log.warning("pruning the backups of tenant %s failed: %s", tenant, exc.message)
        return {"kept": 0, "deleted": [], "leftoversDeleted": 0, "problems": [exc.message]}
    return prune_report(result)


def _split_backup(text: str) -> tuple[str, str]:
    namespace, slash, name = text.partition("/")
    if not slash or not namespace or not name or "/" in name:
        raise CommandError(f"--backup {text!r}: write NAMESPACE/NAME of the CleoBackup")
    return namespace, name


def cmd_backup_run(args: argparse.Namespace) -> int:
    # In a runner pod, a child of the reconcile that made its CronJob or Job (TRACEPARENT).
    with span(
        "backup run",
        {"cleo.backup": args.backup or "", "cleo.tenant": args.tenant or ""},
        context=context_from_environment(),
    ):
        return _backup_run(args)


def _backup_run(args: argparse.Namespace) -> int:
    started = _now()
    if args.backup:
        return _run_for_cluster(args, started)
    if not args.tenant:
        raise CommandError("give --backup NAMESPACE/NAME (in a CronJob) or --tenant NAME")
    report = run_backup_for(
        tenant=args.tenant,
        destination=args.destination,
        keyring_dir=args.keyring_dir,
        retention=_retention(args),
        work_dir=args.work_dir,
    )
    if args.report:
        write_report(report, args.report)
    out(json.dumps(report, indent=2, sort_keys=True))
    return exit_code(report)


def _volume_mount(destination: str, spec: CleoBackupSpec) -> str | None:
    """Where the runner's volume is mounted, for a volume destination (else None).

    The operator renders `--destination` as the mount (`VOLUME_MOUNT`) followed by the
    CleoBackup's `pvc.path`; the mount is that argument without the path, so that a
    runner started with its mounts elsewhere (the test harness does) protects the same
    folders. No directory below the mount is followed (`LocalStorage(base=...)`).
    """
    pvc = spec.destination.pvc if spec.destination is not None else None
    if pvc is None:
        return None
    path = (pvc.path or "").strip("/")
    local = destination.rstrip("/")
    if path and local.endswith("/" + path):
        return local[: -len(path) - 1] or "/"
    if not path:
        return local or VOLUME_MOUNT
    return VOLUME_MOUNT


def _effective(
    kube: KubeClient, namespace: str, spec: CleoBackupSpec
) -> tuple[CleoBackupSpec, str | None]:
    """The spec this run follows, and the time zone its retention counts days in.

    A one-off made with ``spec.from`` is checked again here (its source may have changed
    since the operator made the Job) and runs with the source's destination; it prunes
    nothing (`run_backup_for`). `SourceError` when the source is no longer one it may run.
    """
    if spec.from_backup is None:
        return spec, spec.time_zone
    source = kube.get(BACKUP, spec.from_backup, namespace=namespace)
    checked = source_spec(spec, source, namespace=namespace)
    return effective_spec(spec, checked), checked.time_zone


def _run_for_cluster(args: argparse.Namespace, started: datetime.datetime) -> int:
    namespace, name = _split_backup(args.backup)
    job = args.job_name or os.environ.get(JOB_NAME_ENV) or None
    kube = KubeClient.from_environment(context=args.context)
    backup = kube.get(BACKUP, name, namespace=namespace)
    if backup is None:
        raise CommandError(
            f"CleoBackup {namespace}/{name} does not exist (deleted while its Job ran?)"
        )
    tenant = str((backup.get("spec") or {}).get("tenant") or "")
    made_by = MadeBy(
        cleo_backup=f"{namespace}/{name}",
        one_off=bool((backup.get("spec") or {}).get("from")),
    )
    try:
        spec, time_zone = _effective(kube, namespace, parse_backup_spec(backup.get("spec") or {}))
    except SpecError as exc:
        report = _failed(tenant, "InvalidSpec", str(exc))
    except SourceError as exc:
        report = _failed(tenant, exc.reason, exc.message)
    else:
        report = run_backup_for(
            tenant=spec.tenant,
            destination=args.destination,
            keyring_dir=args.keyring_dir,
            retention=RetentionPolicy.from_spec(spec.retention),
            time_zone=time_zone,
            work_dir=args.work_dir,
            volume_mount=_volume_mount(args.destination, spec),
            made_by=made_by,
        )
    if args.report:
        try:
            write_report(report, args.report)
        except BackupError as exc:
            log.error("%s", exc.message)
    entry = entry_from_report(report, job=job, started=started, ended=_now())
    try:
        outcome = record_run(kube, namespace=namespace, name=name, entry=entry)
    except KubeError as exc:
        # The report is in the termination message: the operator records the run from it.
        log.error(
            "could not record the run in CleoBackup %s/%s's status (%s %s: %s); the operator "
            "records it from this pod's report",
            namespace,
            name,
            exc.status,
            exc.reason,
            exc.message,
        )
    else:
        log.info("CleoBackup %s/%s: run %s", namespace, name, outcome)
    log.info("backup of tenant %s: %s (%s)", tenant, report["outcome"], report["reason"])
    return exit_code(report)


# -- list, verify, prune, restore -------------------------------------------------------------


def cmd_backup_list(args: argparse.Namespace) -> int:
    listing = backup_list(
        storage=storage_from_destination(args.destination),
        tenant=args.tenant,
        keyring=_keyring(args.keyring_dir) if args.keyring_dir else None,
    )
    if args.json:
        out(json.dumps(listing, indent=2))
        return 0
    if not listing:
        out("no backups")
        return 0
    out(f"{'BACKUP':<27} {'TENANT':<20} {'STARTED':<28} {'SIZE':>12} {'ROWS':>10} VERIFIED")
    for item in listing:
        out(
            f"{item['backupId']:<27} {item['tenant']:<20} {item['startTime']:<28} "
            f"{item['archiveSize']:>12} {item['rows']:>10} {_yes_no(item['verified'])}"
        )
    return 0


def _yes_no(value: bool | None) -> str:
    return "unknown (no keyring)" if value is None else "yes" if value else "no"


def cmd_backup_verify(args: argparse.Namespace) -> int:
    verdict = backup_verify(
        storage=storage_from_destination(args.destination),
        backup_id=args.archive,
        keyring=_keyring(args.keyring_dir),
        admin=_login(args.admin, option="--admin"),
        tenant=args.tenant,
        work_dir=args.work_dir,
    )
    out(json.dumps(verdict.to_report(), indent=2, sort_keys=True))
    return 0 if verdict.passed else 1


def _retention(args: argparse.Namespace) -> RetentionPolicy:
    """The policy of the ``--keep-*`` options (none given: keep everything)."""
    return RetentionPolicy(**{f"keep_{rule}": getattr(args, f"keep_{rule}") for rule in KEEP_RULES})


def _policy(args: argparse.Namespace) -> RetentionPolicy:
    policy = _retention(args)
    if policy.keeps_everything:
        raise CommandError(
            "no retention rule given: pass --keep-last, --keep-hourly, --keep-daily, "
            "--keep-weekly or --keep-monthly (nothing is pruned without one)"
        )
    return policy


def cmd_backup_prune(args: argparse.Namespace) -> int:
    # Retention trusts only what the tenant keyring authenticates: without it, it cannot
    # tell a real backup (or verification) from one forged by whoever may write here.
    keyring = _keyring(args.keyring_dir)
    if args.time_zone:
        result = prune(
            storage_from_destination(args.destination),
            tenant=args.tenant,
            policy=_policy(args),
            keyring=keyring,
            tz=_time_zone(args.time_zone),
            dry_run=args.dry_run,
        )
    else:
        result = backup_prune(
            storage=storage_from_destination(args.destination),
            tenant=args.tenant,
            policy=_policy(args),
            keyring=keyring,
            dry_run=args.dry_run,
        )
    report = {
        **prune_report(result),
        "dryRun": result.dry_run,
        "unauthenticated": list(result.unauthenticated),
    }
    out(json.dumps(report, indent=2, sort_keys=True))
    return 1 if result.problems else 0


def cmd_restore(args: argparse.Namespace) -> int:
    with span(
        "restore run", {"cleo.tenant": args.tenant or ""}, context=context_from_environment()
    ):
        return _restore(args)


def _restore(args: argparse.Namespace) -> int:
    result = restore_archive(
        backup_id=args.archive,
        target=_login(args.into, option="--into"),
        storage=storage_from_destination(args.destination),
        keyring=_keyring(args.keyring_dir),
        tenant=args.tenant,
        role=args.role,
        work_dir=args.work_dir,
        no_privileges=args.no_privileges,
        allow_privileged_target=args.allow_privileged_target,
        actor=local_user(),
    )
    out(
        json.dumps(
            {
                "backupId": result.backup_id,
                "tenant": result.tenant,
                "target": result.target,
                "tables": result.tables,
                "rows": result.rows,
                "dumpSize": result.dump_size,
                "durationSeconds": round(result.duration_seconds, 3),
            },
            indent=2,
        )
    )
    return 0


# -- wiring -----------------------------------------------------------------------------------


def _keep_options(parser: argparse.ArgumentParser) -> None:
    for rule, text in KEEP_RULES.items():
        parser.add_argument(f"--keep-{rule}", type=int, metavar="N", help=f"keep {text}")


def _storage_options(parser: argparse.ArgumentParser, *, keyring: bool) -> None:
    parser.add_argument(
        "--destination",
        required=True,
        help="the backups' folder (on the mounted volume), s3://BUCKET/PREFIX?region=R"
        "&endpoint=URL, gs://BUCKET/PREFIX or azure://ACCOUNT/CONTAINER/PREFIX (credentials in "
        "AWS_*, GOOGLE_SERVICE_ACCOUNT_KEY or AZURE_STORAGE_* variables, else the pod's "
        "workload identity or the instance metadata)",
    )
    if keyring:
        default = os.environ.get(KEYRING_DIR_ENV)
        parser.add_argument(
            "--keyring-dir",
            type=Path,
            default=Path(default) if default else None,
            help=f"the tenant keyring Secret as a directory (default: ${KEYRING_DIR_ENV})",
        )
        parser.add_argument(
            "--work-dir",
            type=Path,
            help="where restores decrypt to (default: the temporary folder); needs the "
            "dump's size free",
        )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `backup` (run, list, verify, prune) and `restore` to the `cleo-operator` parser."""
    backup = subparsers.add_parser("backup", help=COMMAND_HELP["backup"])
    sub = backup.add_subparsers(dest="backup_command", required=True)

    run = sub.add_parser(
        "run",
        help="back up now (what a CleoBackup's CronJob runs)",
        description="Back up a tenant's database, prune by retention, report. With --backup "
        "(in a CronJob's pod) the CleoBackup says what and the run is recorded in its status.",
    )
    run.add_argument("--backup", metavar="NAMESPACE/NAME", help="the CleoBackup to run")
    run.add_argument("--tenant", help="without --backup: the tenant to back up")
    run.add_argument("--job-name", help=f"the Job running this (default: ${JOB_NAME_ENV})")
    run.add_argument("--report", type=Path, help="write the JSON report here too")
    run.add_argument("--context", help="kubeconfig context (outside a pod)")
    _storage_options(run, keyring=True)
    _keep_options(run)
    run.set_defaults(func=guarded(cmd_backup_run, log))

    listing = sub.add_parser("list", help="list the complete backups in a destination")
    _storage_options(listing, keyring=True)
    listing.add_argument("--tenant", help="only this tenant's backups")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.set_defaults(func=guarded(cmd_backup_list, log))

    verify = sub.add_parser(
        "verify",
        help="restore a backup into a scratch database and compare it with its manifest",
    )
    _storage_options(verify, keyring=True)
    verify.add_argument("--archive", required=True, metavar="ID", help="the backup id")
    verify.add_argument(
        "--admin",
        required=True,
        metavar="DSN",
        help="a login with CREATEDB and CREATEROLE on the site (it only creates and drops "
        "an unprivileged login and its scratch database), e.g. "
        "'host=db user=admin dbname=postgres' (password in PGPASSWORD)",
    )
    verify.add_argument("--tenant", help="refuse a backup of another tenant")
    verify.set_defaults(func=guarded(cmd_backup_verify, log))

    prune = sub.add_parser(
        "prune",
        help="delete the backups retention does not keep (needs the tenant keyring: only "
        "backups it authenticates are counted or deleted)",
    )
    _storage_options(prune, keyring=True)
    prune.add_argument("--tenant", required=True, help="only this tenant's backups are touched")
    prune.add_argument("--time-zone", help="what a day is for --keep-daily etc. (default UTC)")
    prune.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")
    _keep_options(prune)
    prune.set_defaults(func=guarded(cmd_backup_prune, log))

    restore_parser = subparsers.add_parser(
        "restore",
        help=COMMAND_HELP["restore"],
        description="Restore one backup into a new, empty database. The manifest is "
        "authenticated and the archive decrypted and checked before the target is touched; "
        "pg_restore runs in one transaction. Give the password in PGPASSWORD, not in --into.",
    )
    restore_parser.add_argument("--archive", required=True, metavar="ID", help="the backup id")
    restore_parser.add_argument(
        "--into",
        required=True,
        metavar="DSN",
        help="the empty target database, e.g. 'host=db dbname=cleo_acme_restored user=cleo_acme'",
    )
    _storage_options(restore_parser, keyring=True)
    restore_parser.add_argument("--tenant", help="refuse a backup of another tenant")
    restore_parser.add_argument("--role", help="pg_restore --role (the objects' owner)")
    restore_parser.add_argument(
        "--no-privileges",
        action="store_true",
        help="skip GRANT/REVOKE (for a site where the original roles do not exist)",
    )
    restore_parser.add_argument(
        "--allow-privileged-target",
        action="store_true",
        help="restore even when the --into login is (or can become) a superuser or has "
        "CREATEROLE, BYPASSRLS or REPLICATION; a dump's functions then run with those "
        "rights, so only for an archive you trust completely",
    )
    restore_parser.set_defaults(func=guarded(cmd_restore, log))

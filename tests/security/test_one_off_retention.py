"""History erasure through one-offs: a tenant admin asking for backup after backup.

A one-off (``spec.from``) writes to its source's destination. If its archives counted in the
source's keep rules, or its run pruned with the source's retention, a tenant admin (or
ransomware holding its credentials) asking for one-offs in a loop would push every older
scheduled archive out before encrypting the database. Here the real runner
(`run_backup_for`, as the Jobs call it) backs up a real database into a real folder: the
one-offs prune nothing, and the next scheduled run keeps exactly the scheduled archives
its rules keep, and only the newest one-offs (`keep_one_offs`).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cleo_operator.backup.catalog import list_backups
from cleo_operator.backup.manifest import MadeBy
from cleo_operator.backup.retention import DEFAULT_KEEP_ONE_OFFS, RetentionPolicy
from cleo_operator.backup.storage import LocalStorage
from cleo_operator.cli.backup import run_backup_for
from cleo_operator.crypto import Keyring
from tests.harness.postgres import PostgresServer
from tests.integration.backup_support import create_database, drop_database

pytestmark = [pytest.mark.security, pytest.mark.postgres]

NIGHTLY = MadeBy(cleo_backup="cleo-acme/nightly")
ASKED = MadeBy(cleo_backup="cleo-acme/now", one_off=True)
RULES = RetentionPolicy(keep_last=2)


def test_one_offs_in_a_row_leave_every_scheduled_archive_the_rules_keep(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    database = f"bk_oneoff_{secrets.token_hex(4)}"
    create_database(postgres_server, database)
    try:
        postgres_server.execute("CREATE TABLE notes (id int)", dbname=database)
        keyring = Keyring.generate(datetime.now(UTC))
        keyring_dir = tmp_path / "keyring"
        keyring_dir.mkdir()
        for name, value in keyring.to_secret_data().items():
            (keyring_dir / name).write_bytes(value)
        folder = tmp_path / "volume"
        folder.mkdir()
        environ = {
            "PGHOST": postgres_server.host,
            "PGPORT": str(postgres_server.port),
            "PGDATABASE": database,
            "PGUSER": postgres_server.superuser,
            "PGPASSWORD": postgres_server.password,
        }

        def run(made_by: MadeBy) -> str:
            # A one-off's Job passes its source's retention, as the runner resolves it.
            report = run_backup_for(
                tenant="acme",
                destination=str(folder),
                keyring_dir=keyring_dir,
                retention=RULES,
                environ=environ,
                volume_mount=folder,
                made_by=made_by,
            )
            assert report["outcome"] == "Succeeded", report
            assert ("prune" in report) is not made_by.one_off
            return report["backup"]["backupId"]

        def stored() -> list[str]:
            catalog = list_backups(LocalStorage(folder), tenant="acme", keyring=keyring)
            return [b.backup_id for b in catalog.backups]

        scheduled = [run(NIGHTLY) for _ in range(3)]
        assert stored() == scheduled[-2:]  # keep_last=2, pruned by the scheduled run
        one_offs = [run(ASKED) for _ in range(DEFAULT_KEEP_ONE_OFFS + 3)]
        # No one-off run pruned anything, and the scheduled archives are all still there.
        assert stored() == scheduled[-2:] + one_offs
        newest = run(NIGHTLY)
        assert stored() == [scheduled[-1], *one_offs[-DEFAULT_KEEP_ONE_OFFS:], newest]
    finally:
        drop_database(postgres_server, database)

"""The runner's report: cut to fit a termination message, read back only if it has its shape."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cleo_operator.backup.report import REPORT_LIMIT, RunReport, exit_code, write_report


def test_the_report_fits_a_termination_message(tmp_path: Path) -> None:
    report: RunReport = {
        "outcome": "Succeeded",
        "reason": "BackupSucceeded",
        "message": "m" * 3000,
        "tenant": "acme",
        "prune": {
            "kept": 3,
            "deleted": [f"20260301T1200{i:02d}Z-0000000{i % 10}" for i in range(60)],
            "leftoversDeleted": 0,
            "problems": [],
        },
    }
    path = tmp_path / "termination-log"
    write_report(report, path)
    text = path.read_text()
    assert len(text.encode()) <= REPORT_LIMIT
    written = json.loads(text)
    assert written["outcome"] == "Succeeded"
    assert written["tenant"] == "acme"
    assert exit_code(report) == 0
    assert exit_code({**report, "outcome": "Failed"}) == 1
    small: RunReport = {"outcome": "Failed", "reason": "DumpFailed", "message": "x", "tenant": "t"}
    write_report(small, path)
    assert json.loads(path.read_text()) == small
    assert os.stat(path).st_size < 200

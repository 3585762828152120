"""The Argo CD health checks of docs/argocd, run by a real Lua interpreter.

Argo CD runs each script with the live object as the global `obj` and shows the `status`
and `message` of the table it returns. The objects here carry statuses shaped by the API
models themselves (pydantic, dumped by alias), so a renamed status field breaks these
tests rather than every Argo CD user's health view.

Lua comes from Debian's lua5.4 package (.ci/system-deps installs it). The scripts keep to
Lua 5.1, which Argo CD's interpreter speaks.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cleo_operator.api.backup import CleoBackupStatus
from cleo_operator.api.failover import CleoFailoverStatus
from cleo_operator.api.tenant import CleoTenantStatus

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "docs" / "argocd"
NOW = "2026-01-02T03:04:05Z"


def lua_literal(value: Any) -> str:
    if isinstance(value, dict):
        items = [
            f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items() if v is not None
        ]
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def health(script: str, obj: dict[str, Any]) -> tuple[str, str]:
    lua = shutil.which("lua5.4") or shutil.which("lua")
    if lua is None:
        pytest.fail("no Lua interpreter: install Debian's lua5.4 package (.ci/system-deps)")
    program = (
        f"obj = {lua_literal(obj)}\n"
        f"local hs = dofile({lua_literal(str(SCRIPTS / script))})\n"
        'io.write(hs.status, "\\t", hs.message or "")\n'
    )
    result = subprocess.run(
        [lua, "-"], input=program, capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 0, result.stderr
    status, _, message = result.stdout.partition("\t")
    return status, message


def condition(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": NOW,
    }


def resource(generation: int, status: Any | None, **meta: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "x", "generation": generation, **meta}}
    if status is not None:
        obj["status"] = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    return obj


def tenant(generation: int = 2, observed: int | None = 2, **status: Any) -> dict[str, Any]:
    if observed is None and not status:
        return resource(generation, None)
    return resource(
        generation, CleoTenantStatus.model_validate({"observedGeneration": observed, **status})
    )


READY = condition("Ready", "True", "Reconciled", "every part of the tenant works")


@pytest.mark.parametrize(
    ("obj", "expected", "message"),
    [
        (tenant(observed=None), "Progressing", "Waiting for cleo-operator"),
        (
            tenant(generation=3, phase="Ready", conditions=[READY]),
            "Progressing",
            "observe generation 3",
        ),
        (tenant(phase="Ready", conditions=[READY]), "Healthy", "every part of the tenant works"),
        (
            tenant(
                phase="Paused",
                conditions=[condition("Ready", "False", "Paused", "spec.paused is true")],
            ),
            "Suspended",
            "spec.paused is true",
        ),
        (
            tenant(
                phase="Invalid",
                conditions=[condition("Ready", "False", "InvalidSpec", "spec.quota.cpu: bad")],
            ),
            "Degraded",
            "spec.quota.cpu: bad",
        ),
        (
            tenant(
                phase="Progressing",
                conditions=[condition("Ready", "False", "Progressing", "waiting for pods")],
            ),
            "Progressing",
            "waiting for pods",
        ),
        (
            {
                **tenant(phase="Ready", conditions=[READY]),
                "metadata": {"generation": 2, "deletionTimestamp": "2026-01-02T03:04:05Z"},
            },
            "Progressing",
            "Being deleted",
        ),
    ],
    ids=["new", "stale", "ready", "paused", "invalid", "progressing", "deleting"],
)
def test_tenant_health(obj: dict[str, Any], expected: str, message: str) -> None:
    status, text = health("cleotenant.lua", obj)
    assert status == expected
    assert message in text


def backup(phase: str, *conditions: dict[str, Any]) -> dict[str, Any]:
    return resource(
        1,
        CleoBackupStatus.model_validate(
            {"observedGeneration": 1, "phase": phase, "conditions": list(conditions)}
        ),
    )


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (resource(1, None), "Progressing"),
        (backup("Scheduled"), "Healthy"),
        (backup("Succeeded"), "Healthy"),
        (backup("Running"), "Progressing"),
        (backup("Pending"), "Progressing"),
        (backup("Suspended"), "Suspended"),
        (backup("Failed"), "Degraded"),
        (backup("Invalid"), "Degraded"),
        (backup("Scheduled", condition("Ready", "False", "DumpFailed", "pg_dump: x")), "Degraded"),
    ],
    ids=["new", "scheduled", "succeeded", "running", "pending", "suspended", "failed",
         "invalid", "scheduled-but-failing"],
)  # fmt: skip
def test_backup_health(obj: dict[str, Any], expected: str) -> None:
    assert health("cleobackup.lua", obj)[0] == expected


def failover(phase: str | None) -> dict[str, Any]:
    if phase is None:
        return resource(1, None)
    return resource(1, CleoFailoverStatus.model_validate({"phase": phase}))


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (None, "Progressing"),
        ("Pending", "Progressing"),
        ("Running", "Progressing"),
        ("Succeeded", "Healthy"),
        ("Failed", "Degraded"),
    ],
)
def test_failover_health(phase: str | None, expected: str) -> None:
    status, message = health("cleofailover.lua", failover(phase))
    assert status == expected
    assert message


def test_scripts_keep_to_lua_5_1() -> None:
    for script in SCRIPTS.glob("*.lua"):
        code = "\n".join(line.split("--")[0] for line in script.read_text().splitlines())
        for construct in ("<const>", "<close>", "goto ", "//", "&", "|", "<<", ">>"):
            assert construct not in code, f"{script.name} uses {construct!r} (not Lua 5.1)"
        assert code.rstrip().endswith("return hs"), script.name

"""The command line's shared shape: one root, one way to end a command, no argparse elsewhere."""

from __future__ import annotations

import argparse
import logging
import pathlib
import subprocess
import sys

import pytest

import cleo_operator
from cleo_operator import __version__
from cleo_operator.backup.errors import TargetNotEmpty
from cleo_operator.cli import main
from cleo_operator.cli.common import (
    COMMAND_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    failure,
    guarded,
)
from cleo_operator.cli.root import GROUPS, _LazyCommands, build_parser
from cleo_operator.cli.run import StartupError
from cleo_operator.kube.client import KubeError
from cleo_operator.kube.permissions import _verbs

PACKAGE = pathlib.Path(cleo_operator.__file__).parent
REPO = PACKAGE.parents[1]


@pytest.mark.parametrize(
    ("error", "line", "code"),
    [
        (CommandError("give --tenant"), "give --tenant", EXIT_FAILED),
        (StartupError("the CRDs are missing"), "cannot start: the CRDs are missing", EXIT_USAGE),
        (
            KubeError(status=403, reason="Forbidden", message="no", what="get Secret a/b"),
            "the Kubernetes API refused: get Secret a/b: 403 Forbidden: no",
            EXIT_FAILED,
        ),
        (
            TargetNotEmpty("the target holds 3 tables"),
            "TargetNotEmpty: the target holds 3 tables",
            1,
        ),
        (ValueError("--keep-last: not a number"), "--keep-last: not a number", EXIT_FAILED),
        (RuntimeError("boom"), "RuntimeError: boom", EXIT_FAILED),
    ],
)
def test_every_error_ends_a_command_as_one_line_and_an_exit_code(
    error: Exception, line: str, code: int
) -> None:
    assert failure(error) == (line, code)


@pytest.mark.security
def test_an_unexpected_error_that_quotes_a_secret_ends_redacted() -> None:
    # A library's exception may quote what it was given (a DSN, an Authorization header).
    line, code = failure(RuntimeError("connect to postgresql://app:s3cr3t-Pw@db/x failed"))
    assert "s3cr3t-Pw" not in line
    assert line.startswith("RuntimeError: connect to postgresql://app:")
    assert code == EXIT_FAILED
    line, _ = failure(KubeError(status=500, reason="X", message="token=abc123def", what="w"))
    assert "abc123def" not in line


def test_a_guarded_command_logs_one_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("cleo_operator.test_cli")

    def fails(args: argparse.Namespace) -> int:
        raise CommandError(f"no backup named {args.name}")

    def succeeds(args: argparse.Namespace) -> int:
        return EXIT_OK if args.name else EXIT_FAILED

    args = argparse.Namespace(name="nightly")
    with caplog.at_level(logging.INFO, logger=log.name):
        assert guarded(fails, log)(args) == EXIT_FAILED
        assert guarded(succeeds, log)(args) == EXIT_OK
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "no backup named nightly"
    assert record.exc_info is None


def test_the_root_knows_every_command_group_in_its_order() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == [
        "run",
        "crds",
        "keys",
        "seal",
        "permissions",
        "backup",
        "restore",
        "tenant-roles",
        "failover",
        "check-tenants",
    ]


def test_every_command_is_registered_by_its_group_with_the_roots_help_line() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, _LazyCommands))
    assert list(GROUPS) == list(COMMAND_HELP)
    listed = {choice.dest: choice.help for choice in sub._choices_actions}
    assert listed == dict(COMMAND_HELP)
    placeholders = dict(sub.choices)
    for name in GROUPS:
        sub.load(name)
    # Every placeholder was replaced by its group's parser, which has options of its own.
    for name, parser in sub.choices.items():
        assert parser is not placeholders[name], name
        assert parser.prog == f"cleo-operator {name}"
        assert len(parser._actions) > len(placeholders[name]._actions), name


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has imported after running `code`."""
    done = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=60,
    )
    return set(done.stdout.split())


HEAVY = ("kubernetes", "psycopg", "obstore", "kopf", "pydantic", "cryptography")


def test_the_root_lists_every_command_without_importing_any_group() -> None:
    # Every process that starts the command line pays for what it imports (about a
    # CPU-second for all the groups): the root alone needs none of it.
    loaded = _modules_after(
        "from cleo_operator.cli.root import build_parser\nbuild_parser().format_help()"
    )
    assert "cleo_operator.cli.root" in loaded
    assert not [name for name in HEAVY if name in loaded]
    assert not [name for name in GROUPS.values() if name[0] in loaded]


def test_a_command_imports_its_own_group_only() -> None:
    loaded = _modules_after(
        "from cleo_operator.cli.root import build_parser\n"
        "build_parser().parse_args(['tenant-roles'])"
    )
    assert "cleo_operator.cli.permissions" in loaded
    others = {module for module, _ in GROUPS.values()} - {"cleo_operator.cli.permissions"}
    assert not others & loaded
    assert "kopf" not in loaded
    assert "psycopg" not in loaded


def test_a_wrong_command_line_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["backup", "run", "--keep-last", "many"])
    assert exited.value.code == EXIT_USAGE
    assert "--keep-last" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_command() -> None:
    # The chart, the harness and the e2e tests start `python -m cleo_operator.cli`.
    done = subprocess.run(
        [sys.executable, "-m", "cleo_operator.cli", "--version"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"cleo-operator {__version__}"


def test_no_module_outside_cli_parses_arguments() -> None:
    parsers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "argparse" in path.read_text(encoding="utf-8")
        and path.relative_to(PACKAGE).parts[0] != "cli"
    )
    assert parsers == []


def test_permission_rows_name_only_rbac_verbs() -> None:
    assert _verbs("watch get list") == ("get", "list", "watch")
    with pytest.raises(ValueError, match="not RBAC verbs"):
        _verbs("get read")

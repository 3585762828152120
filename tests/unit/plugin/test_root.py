"""The plugin's command line: kubectl-style options, one-line refusals, and its script."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from cleo_operator.cli.plugin import main
from cleo_operator.cli.plugin.root import build_parser
from cleo_operator.cli.plugin.session import Forbidden, _refusal, resource_name
from cleo_operator.kube.client import KubeError
from cleo_operator.kube.kinds import BACKUP, NAMESPACE, SECRET, TENANT

REPO = Path(__file__).resolve().parents[3]


def test_every_command_takes_the_kubectl_options_after_it() -> None:
    parser = build_parser()
    for argv in (
        ["status", "acme"],
        ["backups", "acme"],
        ["backup", "now", "acme"],
        ["seal", "acme.yaml", "--check"],
    ):
        args = parser.parse_args(
            [*argv, "--context", "prod", "--kubeconfig", "k", "-n", "ns", "-o", "json"]
        )
        assert (args.context, args.kubeconfig, args.namespace, args.output) == (
            "prod",
            "k",
            "ns",
            "json",
        )
    args = parser.parse_args(["backup", "now", "acme", "--from", "nightly", "--timeout", "90s"])
    assert (args.source, args.timeout, args.wait) == ("nightly", 90.0, False)
    assert parser.parse_args(["backup", "now", "a", "--timeout", "15m"]).timeout == 900.0


def test_a_wrong_command_line_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["status", "acme", "-o", "wide"])
    assert exited.value.code == 2
    assert "invalid choice: 'wide'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["backup", "now", "acme", "--timeout", "soon"])
    assert "'soon' is not a duration" in capsys.readouterr().err


def test_refusals_say_what_may_not_be_done_and_where() -> None:
    def error(status: int, reason: str = "") -> KubeError:
        return KubeError(status=status, reason=reason, message="msg", what="x")

    assert str(_refusal(error(403), verb="list", kind=BACKUP, namespace="cleo-a")) == (
        "you may not list cleobackups.cleoai.io in namespace cleo-a"
    )
    assert isinstance(_refusal(error(403), verb="get", kind=TENANT, namespace=None), Forbidden)
    assert str(_refusal(error(403), verb="get", kind=NAMESPACE, namespace=None)) == (
        "you may not get namespaces at cluster scope"
    )
    assert "401 Unauthorized" in str(_refusal(error(401), verb="get", kind=TENANT, namespace=None))
    assert str(_refusal(error(500, "InternalError"), verb="get", kind=TENANT, namespace=None)) == (
        "cannot get cleotenants.cleoai.io at cluster scope: the API server answered 500 "
        "InternalError: msg"
    )
    assert resource_name(SECRET) == "secrets"


def test_an_unusable_kubeconfig_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    assert main(["status", "acme", "--kubeconfig", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot use the kubeconfig ({missing}): ")
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_the_package_installs_the_kubectl_cleo_script() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl-cleo"] == "cleo_operator.cli.plugin:main"
    # The installed entry point (the image's `pip install .` makes the same one) loads it.
    (entry,) = entry_points(group="console_scripts", name="kubectl-cleo")
    assert entry.load() is main


def test_python_dash_m_runs_the_plugin() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cleo_operator.cli.plugin", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0
    assert "usage: kubectl cleo" in result.stdout

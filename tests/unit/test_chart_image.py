"""The image recipe (Dockerfile, .dockerignore, constraints.txt) agrees with the project.

No image can be built on the development machines (there is no container engine), so what
can drift is checked here instead: the pinned versions are the ones the tests run with and
satisfy pyproject.toml; the build context holds every file the Dockerfile copies; the image's
user is the one the chart runs as; and the final stage carries no build tools.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def pins() -> dict[str, str]:
    result: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"not a pin: {line!r}"
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), f"not a version: {line!r}"
        result[canonicalize_name(name)] = version
    return result


def runtime_closure() -> dict[str, str]:
    """The installed distributions cleo-operator needs at run time, with their versions."""
    seen: dict[str, str] = {}

    def walk(name: str, extras: tuple[str, ...]) -> None:
        key = canonicalize_name(name)
        dist = importlib.metadata.distribution(name)
        if key in seen and not extras:
            return
        seen[key] = dist.version
        for raw in dist.requires or []:
            req = Requirement(raw)
            wanted = ("", *extras)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in wanted):
                continue
            walk(req.name, tuple(req.extras))

    # From pyproject.toml itself, not the installed package's metadata: an editable install
    # made before a dependency was added does not list it.
    for raw in PYPROJECT["project"]["dependencies"]:
        req = Requirement(raw)
        walk(req.name, tuple(req.extras))
    return seen


HEADER = """\
# The runtime dependencies of cleo-operator (the closure of pyproject.toml's `dependencies`),
# pinned to the versions installed in the project's virtualenv, which the test suite runs
# with; the Dockerfile installs exactly these. Generated, never edited by hand:
#   .venv/bin/python -m tests.unit.test_chart_image > constraints.txt
# tests/unit/test_chart_image.py fails when it is out of date.
"""


def render_constraints() -> str:
    """constraints.txt as it should be: the header and the installed runtime closure."""
    lines = [f"{name}=={version}" for name, version in sorted(runtime_closure().items())]
    return HEADER + "\n".join(lines) + "\n"


def stages() -> list[str]:
    return re.split(r"^FROM ", DOCKERFILE, flags=re.MULTILINE)[1:]


def test_constraints_pin_every_runtime_dependency_at_the_tested_version() -> None:
    pinned, installed = pins(), runtime_closure()
    assert pinned == installed, (
        "constraints.txt is not the installed runtime closure; regenerate it with "
        "`.venv/bin/python -m tests.unit.test_chart_image > constraints.txt`: missing "
        f"{sorted(set(installed) - set(pinned))}, "
        f"stale {sorted(k for k in pinned if installed.get(k) != pinned[k])}"
    )
    assert (REPO / "constraints.txt").read_text() == render_constraints()


def test_constraints_satisfy_pyproject() -> None:
    pinned = pins()
    for raw in PYPROJECT["project"]["dependencies"]:
        req = Requirement(raw)
        version = pinned.get(canonicalize_name(req.name))
        assert version is not None, f"{req.name} is not pinned"
        assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version}: {req}"
    assert "psycopg-binary" in pinned  # psycopg[binary]: libpq comes with the wheel


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            body = pattern.removeprefix("!").rstrip("/")
            if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
                keep = negated
        return keep

    sources = [
        src
        for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE, flags=re.MULTILINE)
        for src in line.split()[:-1]
    ]
    assert sources, "the Dockerfile copies nothing from the context"
    for src in sources:
        path = src.rstrip("/")
        assert (REPO / path).exists(), f"COPY {src}: no such file in the repository"
        assert included(path), f"COPY {src}: excluded by .dockerignore"
    assert not included(".venv")
    assert not included(".run")
    readme = PYPROJECT["project"]["readme"]
    assert readme in sources, "pyproject's readme is needed to build the package"


def test_image_runs_as_the_charts_non_root_user() -> None:
    values = yaml.safe_load((REPO / "charts" / "cleo-operator" / "values.yaml").read_text())
    final = stages()[-1]
    user = re.findall(r"^USER (\d+):(\d+)$", final, flags=re.MULTILINE)
    assert user == [
        (
            str(values["podSecurityContext"]["runAsUser"]),
            str(values["podSecurityContext"]["runAsGroup"]),
        )
    ]
    assert int(user[0][0]) != 0
    assert f"--uid {user[0][0]}" in final


def test_final_stage_has_the_venv_and_no_build_tools() -> None:
    build, final = stages()[0], stages()[-1]
    assert " AS build" in build.splitlines()[0]
    assert "COPY --from=build /opt/cleo /opt/cleo" in final
    for tool in ("gcc", "build-essential", "make ", "git"):
        assert tool not in final, f"{tool} in the final stage"
    assert "pip uninstall --yes pip" in final
    assert "--no-install-recommends" in final
    # The backup runner needs pg_dump and pg_restore, without a server.
    assert "postgresql-client-${PG_MAJOR}" in final
    assert "postgresql-${PG_MAJOR}" not in final.replace("postgresql-client-", "")


def test_image_runs_the_cli_on_the_pinned_python() -> None:
    assert re.search(r"^ARG PYTHON_VERSION=3\.11$", DOCKERFILE, flags=re.MULTILINE)
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert "cleo-operator" in PYPROJECT["project"]["scripts"]
    assert re.search(r'^ENTRYPOINT \["cleo-operator"\]$', stages()[-1], flags=re.MULTILINE)
    assert "/opt/cleo/bin/pip install --only-binary=:all: -r constraints.txt" in DOCKERFILE
    assert "/opt/cleo/bin/pip install --no-deps ." in DOCKERFILE


if __name__ == "__main__":
    sys.stdout.write(render_constraints())

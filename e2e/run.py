"""`make run`: the operator reconciling the example tenant on a cluster, in the foreground.

By default it builds and starts the local control plane (see e2e/cluster.py). Only when the
user asks does it use another cluster: CLUSTER=current takes the current kubeconfig
context, CLUSTER=kind creates (or reuses) a kind cluster on a machine with Docker.
Ctrl-C stops the operator and everything this command started.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".run"


def say(message: str) -> None:
    sys.stderr.write(f"==> {message}\n")
    sys.stderr.flush()


@contextlib.contextmanager
def local_cluster() -> Iterator[tuple[dict[str, str], str]]:
    from e2e.cluster import LocalCluster, build_toolchain  # noqa: PLC0415

    say("building the local control plane (cached after the first build)")
    bin_dir = build_toolchain()
    say(
        "starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler, KWOK"
        " and metrics-server"
    )
    workdir = STATE / "run-cluster"
    with LocalCluster(bin_dir=bin_dir, workdir=workdir) as cluster:
        yield cluster.env(), str(bin_dir / "kubectl")


@contextlib.contextmanager
def current_cluster() -> Iterator[tuple[dict[str, str], str]]:
    say("using the current kubeconfig context (CLUSTER=current)")
    yield dict(os.environ), "kubectl"


@contextlib.contextmanager
def kind_cluster() -> Iterator[tuple[dict[str, str], str]]:
    name = os.environ.get("KIND_CLUSTER_NAME", "cleo")
    existing = subprocess.run(
        ["kind", "get", "clusters"], capture_output=True, text=True, check=True
    ).stdout.split()
    if name not in existing:
        say(f"creating kind cluster {name}")
        subprocess.run(
            [
                "kind",
                "create",
                "cluster",
                "--name",
                name,
                "--config",
                str(REPO / "e2e" / "kind-config.yaml"),
            ],
            check=True,
        )
    kubeconfig = STATE / f"kind-{name}.kubeconfig"
    STATE.mkdir(exist_ok=True)
    kubeconfig.write_text(
        subprocess.run(
            ["kind", "get", "kubeconfig", "--name", name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    yield {**os.environ, "KUBECONFIG": str(kubeconfig)}, "kubectl"


def _interrupt(signum: int, frame: object) -> None:
    del signum, frame
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument(
        "--cluster",
        default=os.environ.get("CLUSTER", "local"),
        choices=["local", "current", "kind"],
    )
    parser.add_argument("--example", type=Path, default=REPO / "examples" / "tenant.yaml")
    args = parser.parse_args(argv)
    # A shell that starts us in the background ignores SIGINT for us; Ctrl-C and a TERM
    # from a supervisor must both end in the same orderly stop.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    choose = {"local": local_cluster, "current": current_cluster, "kind": kind_cluster}
    with choose[args.cluster]() as (env, kubectl):

        def k(*a: str) -> None:
            subprocess.run([kubectl, *a], env=env, check=True)

        say("installing the CRDs")
        k("apply", "--server-side", "-f", str(REPO / "crds"))
        for plural in ("cleotenants", "cleobackups", "cleofailovers"):
            k("wait", "--for=condition=Established", "--timeout=60s", f"crd/{plural}.cleoai.io")
        # What the operator binds tenant admins and viewers to; it will not start without.
        say("installing the tenant ClusterRoles (deploy/rbac/tenant-roles.yaml)")
        k("apply", "--server-side", "-f", str(REPO / "deploy" / "rbac" / "tenant-roles.yaml"))
        # What the operator binds itself to in each tenant namespace.
        say("installing its tenant ClusterRole (deploy/rbac/operator-tenant-role.yaml)")
        k(
            "apply",
            "--server-side",
            "-f",
            str(REPO / "deploy" / "rbac" / "operator-tenant-role.yaml"),
        )
        say("creating the operator's namespace, cleo-system (its keys live there)")
        subprocess.run(
            [kubectl, "apply", "-f", "-"],
            input='{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cleo-system"}}',
            text=True,
            env=env,
            check=True,
        )
        say(f"applying {args.example.relative_to(REPO)}")
        k("apply", "-f", str(args.example))
        kubeconfig = env.get("KUBECONFIG", "~/.kube/config")
        say("the operator runs in the foreground; in another terminal:")
        sys.stderr.write(
            f"\n    export KUBECONFIG={kubeconfig}\n    {kubectl} get cleotenants -w\n\n"
        )
        if args.cluster == "local":
            # The tenant reads Degraded until its HPA reads metrics: say so, or it looks stuck.
            say(
                "the tenant turns Ready once metrics-server has measured its pods"
                " (within a minute); `kubectl top pods -A` shows what the HPA reads"
            )
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cleo_operator.cli",
                "run",
                "--metrics-port",
                "0",
                "--liveness",
                "",
            ],
            env=env,
        )
        try:
            return operator.wait()
        except KeyboardInterrupt:
            say("stopping")
            operator.send_signal(signal.SIGINT)
            try:
                operator.wait(timeout=20)
            except subprocess.TimeoutExpired:
                operator.kill()
            return 0


if __name__ == "__main__":
    sys.exit(main())

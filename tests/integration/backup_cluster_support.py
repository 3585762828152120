"""Running a backup Job's pod as a local process, exactly as the kubelet would start it.

The local control plane has no container runtime (KWOK fakes the node), so a CronJob's
Jobs "complete" without running anything. To prove what the pod *would* do, `run_job_pod`
takes the Job's pod template and starts its container command here, with everything a
kubelet would hand it and nothing else:

- environment: literal values, Secret keys read from the cluster (a missing key that is not
  optional fails the test, as the kubelet would refuse to start the container), and the
  downward API's labels and names of the pod;
- volumes: a Secret volume becomes a folder of its keys (with its ``defaultMode``), an
  emptyDir a fresh folder, a PersistentVolumeClaim the folder ``<volumes>/<ns>/<claim>``
  (where the operator-side verification also looks), and the termination message path a
  file; every argument that names a mount path is rewritten to the local folder;
- identity: a kubeconfig with a token of the pod's ServiceAccount (``kubectl create
  token``), so the run has exactly the rights the rendered Role grants;
- no environment of the test process (no PG* variables, no admin kubeconfig).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cleo_operator
from cleo_operator.api.objects import KubeObject
from cleo_operator.crypto import Keyring
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import SECRET, Kind
from cleo_operator.kube.secrets import secret_value
from cleo_operator.reconcile.backup import BackupReconciler, BackupSettings
from cleo_operator.reconcile.database import TenantDatabases
from cleo_operator.render.backup import BackupPodSettings
from e2e.cluster import LocalCluster
from tests.harness.postgres import PostgresServer, find_postgres_bindir
from tests.harness.specs import backup_manifest
from tests.integration.tenant_database_support import (
    Tenant,
    connect_with_secret,
    reconcile,
    secret_of,
    secret_values,
)

REPO = Path(__file__).resolve().parents[2]
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
RUNNER_IMAGE = "registry.example/cleo-operator:test"
API_SERVER = ("127.0.0.1/32",)
"""The API server as the runner's NetworkPolicy names it (the local control plane)."""


@dataclass
class LocalRun:
    """What the pod's command did."""

    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None
    """The JSON report it left at its termination message path, if any."""
    env: dict[str, str]
    args: list[str]


def _field(pod_meta: dict[str, Any], path: str) -> str:
    if path == "metadata.name":
        return str(pod_meta["name"])
    if path == "metadata.namespace":
        return str(pod_meta["namespace"])
    prefix = "metadata.labels['"
    if path.startswith(prefix) and path.endswith("']"):
        return str(pod_meta["labels"].get(path[len(prefix) : -2], ""))
    raise AssertionError(f"the test harness does not resolve fieldRef {path}")


def resolve_env(
    kube: KubeClient, container: dict[str, Any], *, namespace: str, pod_meta: dict[str, Any]
) -> dict[str, str]:
    """The container's environment as the kubelet would build it."""
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = var["value"]
            continue
        source = var.get("valueFrom") or {}
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = kube.get(SECRET, ref["name"], namespace=namespace)
            value = secret_value(secret, ref["key"])
            if value is None:
                assert ref.get("optional"), (
                    f"the kubelet would not start the pod: Secret {ref['name']} has no key "
                    f"{ref['key']} for ${name}"
                )
                continue
            env[name] = value
        elif "fieldRef" in source:
            env[name] = _field(pod_meta, source["fieldRef"]["fieldPath"])
        else:
            raise AssertionError(f"the test harness does not resolve ${name}: {source}")
    return env


def _write_secret(kube: KubeClient, volume: dict[str, Any], namespace: str, folder: Path) -> None:
    source = volume["secret"]
    secret = kube.get(SECRET, source["secretName"], namespace=namespace)
    assert secret is not None, f"the kubelet would not start the pod: {source} does not exist"
    folder.mkdir(parents=True)
    mode = int(source.get("defaultMode", 0o644))
    data = secret.get("data") or {}
    # As the kubelet does: `items` picks keys (a missing one is an error unless optional).
    items = source.get("items")
    paths = {key: key for key in data} if items is None else {i["key"]: i["path"] for i in items}
    for key, relative in paths.items():
        if key not in data:
            assert source.get("optional"), f"the kubelet would not start the pod: no {key}"
            continue
        path = folder / relative
        path.write_bytes(base64.b64decode(data[key]))
        path.chmod(mode)


def run_job_pod(
    cluster: LocalCluster,
    kube: KubeClient,
    job: KubeObject,
    *,
    workdir: Path,
    volumes: Path,
    timeout: float = 300.0,
) -> LocalRun:
    """Start the Job's container command here as its pod would run (see the docstring)."""
    namespace = job["metadata"]["namespace"]
    template = job["spec"]["template"]
    pod = template["spec"]
    (container,) = pod["containers"]
    pod_meta = {
        "name": f"{job['metadata']['name']}-local",
        "namespace": namespace,
        "labels": {
            **template["metadata"].get("labels", {}),
            JOB_NAME_LABEL: job["metadata"]["name"],
        },
    }
    workdir.mkdir(parents=True, exist_ok=True)
    by_name = {v["name"]: v for v in pod.get("volumes") or []}
    paths: dict[str, Path] = {}
    env = {
        "PATH": os.pathsep.join(
            [str(find_postgres_bindir()), str(Path(sys.executable).parent), "/usr/bin", "/bin"]
        ),
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        # The code under test (the package these tests import), as the image holds the
        # operator's own: not whatever checkout the virtualenv's install points at.
        "PYTHONPATH": str(Path(cleo_operator.__file__).resolve().parent.parent),
    }
    for mount in container.get("volumeMounts") or []:
        volume = by_name[mount["name"]]
        if "secret" in volume:
            folder = workdir / f"secret-{mount['name']}"
            _write_secret(kube, volume, namespace, folder)
        elif "persistentVolumeClaim" in volume:
            folder = volumes / namespace / volume["persistentVolumeClaim"]["claimName"]
            folder.mkdir(parents=True, exist_ok=True)
        elif "emptyDir" in volume:
            folder = workdir / f"empty-{mount['name']}"
            folder.mkdir(parents=True)
            if mount["mountPath"] == "/tmp":
                env["TMPDIR"] = str(folder)
        else:
            raise AssertionError(f"the test harness does not mount {volume}")
        paths[mount["mountPath"]] = folder
    termination = container.get("terminationMessagePath", "/dev/termination-log")
    report_file = workdir / "termination-log"
    paths[termination] = report_file

    def local(arg: str) -> str:
        for mount_path, folder in sorted(paths.items(), key=lambda p: -len(p[0])):
            if arg == mount_path or arg.startswith(mount_path + "/"):
                return str(folder) + arg[len(mount_path) :]
        return arg

    command = container["command"]
    assert command[0] == "cleo-operator", command
    args = [local(a) for a in command[1:]]
    env.update(resolve_env(kube, container, namespace=namespace, pod_meta=pod_meta))
    account = pod["serviceAccountName"]
    assert pod.get("automountServiceAccountToken") is True, "the pod would get no API token"
    token = cluster.kubectl("create", "token", account, "-n", namespace).stdout.strip()
    env["KUBECONFIG"] = str(
        cluster.kubeconfig_for(f"system:serviceaccount:{namespace}:{account}", token)
    )
    # The image's entry point: `cleo-operator` is `cleo_operator.cli:main`.
    completed = subprocess.run(
        [sys.executable, "-m", "cleo_operator.cli", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    report = None
    if report_file.exists():
        report = json.loads(report_file.read_text())
    return LocalRun(
        returncode=completed.returncode,
        stdout=completed.stdout,
        stderr=completed.stderr,
        report=report,
        env=env,
        args=args,
    )


def local_backup_reconciler(
    kube: KubeClient, databases: TenantDatabases, *, volumes: Path
) -> BackupReconciler:
    """The backup reconciler as the operator builds it, for runs played by `run_job_pod`:
    the test runner image, the local API server in its NetworkPolicy, volumes under
    `volumes`, quick retries."""
    return BackupReconciler.from_databases(
        kube,
        databases,
        settings=BackupSettings(
            pod=BackupPodSettings(image=RUNNER_IMAGE, api_server_cidrs=API_SERVER),
            volumes_dir=volumes,
            retry_seconds=2.0,
        ),
    )


PV = Kind("v1", "PersistentVolume", "persistentvolumes", namespaced=False)


def bound_claim(kube: KubeClient, ns: str, name: str) -> str:
    """A claim bound to a volume, as a provisioner would leave it.

    The local control plane runs no volume binder; a pod with an unbound claim would never
    be scheduled, its Job never end, and (concurrencyPolicy Forbid) no next Job start.
    The annotation is what the binder writes once it bound the claim; the scheduler trusts it.
    """
    volume = f"{ns}-{name}"
    kube.request(
        "POST",
        PV.path(),
        body={
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume, "labels": {"cleoai.io/test": ns}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "hostPath": {"path": f"/nonexistent/{volume}"},
                "claimRef": {"namespace": ns, "name": name},
            },
        },
    )
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": name,
                "namespace": ns,
                "annotations": {"pv.kubernetes.io/bind-completed": "yes"},
            },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "volumeName": volume,
            },
        }
    )
    return volume


def write_keyring(kube: KubeClient, ns: str) -> None:
    """A new keyring in the tenant keyring Secret of `ns`, as the operator would write it."""
    keyring = Keyring.generate(datetime.datetime.now(datetime.UTC)).to_secret_data()
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cleo-keyring", "namespace": ns},
            "data": {k: base64.b64encode(v).decode() for k, v in keyring.items()},
        }
    )


def seed_backup_tenant(
    kube: KubeClient, databases: TenantDatabases, tenant: Tenant, ns: str
) -> str:
    """What a backup of `tenant` in `ns` needs, as the operator leaves it: its database and
    credentials Secret (made by `databases`), a keyring Secret, a bound claim ``backups``
    (whose volume's name is returned) and a table of 300 rows to back up."""
    outcome = reconcile(databases, tenant, ns)
    assert outcome.ready, outcome.condition
    write_keyring(kube, ns)
    volume = bound_claim(kube, ns, "backups")
    with connect_with_secret(secret_values(secret_of(kube, ns))) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 300) g")
    return volume


def restore_with_cli(
    kube: KubeClient,
    server: PostgresServer,
    *,
    namespace: str,
    work: Path,
    archives: Path,
    backup_id: str,
    target: str,
) -> subprocess.CompletedProcess[str]:
    """`cleo-operator restore` as a person runs it: the tenant's keyring from its Secret, the
    archive from the `archives` folder, the password in PGPASSWORD (never on the command
    line)."""
    keyring = kube.get(SECRET, "cleo-keyring", namespace=namespace)
    assert keyring is not None
    keyring_dir = work / "restore-keyring"
    keyring_dir.mkdir(parents=True)
    for key, value in keyring["data"].items():
        (keyring_dir / key).write_bytes(base64.b64decode(value))
    env = {
        "PATH": f"{find_postgres_bindir()}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(work),
        "PGPASSWORD": server.password,
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cleo_operator.cli",
            "restore",
            "--archive",
            backup_id,
            "--into",
            f"host={server.host} port={server.port} dbname={target} user={server.superuser}",
            "--destination",
            str(archives),
            "--keyring-dir",
            str(keyring_dir),
            "--no-privileges",
            # The test's superuser restores the test's own archive.
            "--allow-privileged-target",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@dataclass
class BackupScene:
    """A tenant with a real database, its Secrets and volume, and a backup reconciler."""

    kube: KubeClient
    cluster: LocalCluster
    databases: TenantDatabases
    tenant: Tenant
    namespace: str
    volumes: Path
    work: Path
    reconciler: BackupReconciler

    def backup(self, name: str, spec: dict[str, Any]) -> None:
        self.kube.create(
            backup_manifest(name, self.namespace, {"tenant": self.tenant.name, **spec})
        )

    def run(self, job: KubeObject, *, workdir: str | None = None) -> LocalRun:
        """The Job's pod's command, run here (in `workdir`, default: the Job's name)."""
        return run_job_pod(
            self.cluster,
            self.kube,
            job,
            workdir=self.work / (workdir or job["metadata"]["name"]),
            volumes=self.volumes,
        )

    def restore(
        self, server: PostgresServer, *, folder: str, backup_id: str, target: str
    ) -> subprocess.CompletedProcess[str]:
        """`restore_with_cli` of an archive in the volume's `folder`."""
        return restore_with_cli(
            self.kube,
            server,
            namespace=self.namespace,
            work=self.work,
            archives=self.volumes / self.namespace / folder,
            backup_id=backup_id,
            target=target,
        )

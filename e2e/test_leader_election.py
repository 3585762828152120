"""Two operator replicas on the local control plane: one leads, only it writes, and the
other takes over when the leader is killed, stopped or cut off (issue 14, item 1).

Each replica is a real `cleo-operator run` process; the audit log of the API server tells
their writes apart by the User-Agent, which names the replica (kube/leader.py). The
session's operator is paused meanwhile (it would be a third replica). Short timings: a
lease of 4 s (renew deadline 3 s, retry 0.5 s), or 10 s where a test shows that a graceful
handover does not wait for the lease to expire.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from cleo_operator.core.times import parse_rfc3339
from cleo_operator.kube.leader import LEASE_ENV, RENEW_DEADLINE_ENV, RETRY_PERIOD_ENV
from cleo_operator.kube.permissions import LEADER_LEASE
from e2e.cluster import OPERATOR_USER, LocalCluster
from tests.harness.cluster_fixtures import kubectl_json, wait_for
from tests.harness.operator_fixtures import OPERATOR_NAMESPACE, OperatorProcess, start_operator
from tests.harness.specs import IMAGE, tenant_manifest
from tests.harness.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

LEASE_SECONDS: Final = 4.0
RENEW_DEADLINE_SECONDS: Final = 3.0
RETRY_SECONDS: Final = 0.5
FAST: Final = {
    LEASE_ENV: f"{LEASE_SECONDS:g}",
    RENEW_DEADLINE_ENV: f"{RENEW_DEADLINE_SECONDS:g}",
    RETRY_PERIOD_ENV: f"{RETRY_SECONDS:g}",
}
LONG_LEASE_SECONDS: Final = 10.0
LONG_LEASE: Final = {
    LEASE_ENV: f"{LONG_LEASE_SECONDS:g}",
    RENEW_DEADLINE_ENV: "6",
    RETRY_PERIOD_ENV: f"{RETRY_SECONDS:g}",
}


@dataclass
class Replicas:
    """The operator processes of one test, all in the session's operator namespace."""

    cluster: LocalCluster
    sites: dict[str, str]
    folder: Path
    started: list[OperatorProcess] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)

    def start(
        self,
        name: str,
        timings: dict[str, str],
        *,
        lead: bool,
        kubeconfig: Path | None = None,
        wait: bool = True,
    ) -> OperatorProcess:
        env = {**self.sites, **timings}
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        proc = start_operator(
            self.cluster,
            self.folder / f"{name}.log",
            extra_args=["--operator-namespace", OPERATOR_NAMESPACE],
            env=env,
            wait_ready=wait,
            wait_leading=lead,
        )
        self.started.append(proc)
        return proc

    def start_two(self, timings: dict[str, str]) -> tuple[OperatorProcess, OperatorProcess]:
        """Two replicas started together; (the one that leads, the standby)."""
        both = [self.start(name, timings, lead=False, wait=False) for name in ("a", "b")]
        wait_for(
            lambda: all(live(p) for p in both) and sum(p.leads() for p in both) == 1,
            timeout=90,
            what="two live replicas, one of them leading",
        )
        leader = next(p for p in both if p.leads())
        standby = next(p for p in both if p is not leader)
        return leader, standby

    def apply_tenant(self, name: str) -> None:
        self.tenants.append(name)
        body = tenant_manifest(name, {"workload": {"image": IMAGE}})
        self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))

    def stop(self) -> None:
        # Leader or standby, SIGTERM ends a replica cleanly (code 0).
        unclean = [
            f"{proc.log_path.name}: {code}"
            for proc in self.started
            if proc.alive() and (code := proc.stop()) != 0
        ]
        for name in self.tenants:
            self.cluster.kubectl("delete", "cleotenant", name, "--wait=false", check=False)
        # The next operator (the session's) starts from no Lease rather than waiting out
        # one whose holder a test killed.
        self.cluster.kubectl(
            "delete", "lease", LEADER_LEASE, "-n", OPERATOR_NAMESPACE, "--ignore-not-found"
        )
        assert not unclean, unclean


@pytest.fixture
def replicas(
    cluster: LocalCluster,
    crds_installed: None,
    operator_sites: dict[str, str],
    without_session_operator: None,
    tmp_path: Path,
) -> Iterator[Replicas]:
    del crds_installed, without_session_operator
    running = Replicas(cluster, operator_sites, tmp_path)
    try:
        yield running
    finally:
        running.stop()


def live(proc: OperatorProcess) -> bool:
    try:
        with urllib.request.urlopen(proc.liveness_url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def health(proc: OperatorProcess) -> Any:
    """What its /healthz answers (decoded), None when it does not."""
    try:
        with urllib.request.urlopen(proc.liveness_url, timeout=2) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def lease(cluster: LocalCluster) -> dict[str, Any]:
    found: dict[str, Any] = kubectl_json(
        cluster, "get", "lease", LEADER_LEASE, "-n", OPERATOR_NAMESPACE
    )
    assert found, "no leader Lease"
    return found


def holder(cluster: LocalCluster) -> str:
    return str(lease(cluster)["spec"].get("holderIdentity") or "")


def ready(cluster: LocalCluster, name: str) -> bool:
    tenant = kubectl_json(cluster, "get", "cleotenant", name)
    conditions = ((tenant or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait_ready(cluster: LocalCluster, name: str) -> None:
    wait_for(lambda: ready(cluster, name), timeout=90, what=f"tenant {name} Ready")


def operator_writes(cluster: LocalCluster, offset: int) -> list[dict[str, Any]]:
    return cluster.audit_events(user=OPERATOR_USER, offset=offset)


def of_tenant(event: dict[str, Any], name: str) -> bool:
    ref = event["objectRef"]
    return bool(
        ref.get("namespace") == f"cleo-{name}"
        or (ref.get("resource") == "namespaces" and ref.get("name") == f"cleo-{name}")
        or (ref.get("resource") == "cleotenants" and ref.get("name") == name)
    )


def received(event: dict[str, Any]) -> float:
    return parse_rfc3339(event["requestReceivedTimestamp"]).timestamp()


def test_one_replica_leads_only_it_writes_and_sigterm_hands_over_at_once(
    cluster: LocalCluster, replicas: Replicas
) -> None:
    leader, standby = replicas.start_two(LONG_LEASE)
    # From here on (the start checks may create the operator's keys, once, whoever wins).
    offset = cluster.audit_offset()
    assert holder(cluster) == leader.identity
    # The standby is healthy (liveness 200) and says it stands by.
    assert health(standby) == {"leader": False, "replica": standby.identity}
    assert standby.leader_state() == (standby.identity, False)
    assert leader.identity != standby.identity

    replicas.apply_tenant("le-only")
    wait_ready(cluster, "le-only")
    writes = operator_writes(cluster, offset)
    # The standby changed nothing, not even the Lease (it only reads it).
    assert not [e for e in writes if standby.identity in e.get("userAgent", "")]
    mine = [e for e in writes if of_tenant(e, "le-only")]
    assert len(mine) >= 5
    assert all(leader.identity in e.get("userAgent", "") for e in mine), {
        e.get("userAgent") for e in mine
    }
    # Kopf's own requests carry the replica's name too (its finalizer on the tenant is a
    # patch of the CleoTenant itself); none says `kopf/<version>`.
    assert any(
        e["objectRef"].get("resource") == "cleotenants"
        and e["verb"] == "patch"
        and not e["objectRef"].get("subresource")
        for e in mine
    )
    assert not [e for e in writes if e.get("userAgent", "").startswith("kopf/")]

    leader.popen.send_signal(signal.SIGTERM)
    assert leader.popen.wait(timeout=30) == 0, leader.log_text()[-3000:]
    stopped = time.monotonic()
    wait_for(standby.leads, timeout=LONG_LEASE_SECONDS, interval=0.1, what="the standby to lead")
    took = time.monotonic() - stopped
    # Released, not expired: the standby took over at its next retry.
    assert took < LONG_LEASE_SECONDS / 3, f"the handover took {took:.1f} s"
    assert holder(cluster) == standby.identity
    assert "released the leader lease" in leader.log_text()
    replicas.apply_tenant("le-after-term")
    wait_ready(cluster, "le-after-term")


def test_sigkill_of_the_leader_hands_over_once_the_lease_expires(
    cluster: LocalCluster, replicas: Replicas
) -> None:
    leader, standby = replicas.start_two(FAST)
    offset = cluster.audit_offset()
    leader.popen.kill()
    leader.popen.wait(timeout=10)
    killed, killed_wall = time.monotonic(), time.time()
    replicas.apply_tenant("le-killed")
    wait_for(standby.leads, timeout=LEASE_SECONDS + 5, interval=0.1, what="the standby to lead")
    took = time.monotonic() - killed
    # It waited the lease out (from its last sight of a renew, up to a retry before the kill).
    assert took > LEASE_SECONDS - 2 * RETRY_SECONDS, f"took over after {took:.1f} s"
    assert holder(cluster) == standby.identity
    wait_ready(cluster, "le-killed")
    # Its /healthz is Kopf's now, on the same port (Kopf's probes: the tenants it loops over).
    wait_for(lambda: "tenants" in (health(standby) or {}), timeout=10, what="Kopf's /healthz")
    mine = [e for e in operator_writes(cluster, offset) if of_tenant(e, "le-killed")]
    assert mine
    assert all(standby.identity in e.get("userAgent", "") for e in mine)
    first = min(received(e) for e in mine) - killed_wall
    assert first < LEASE_SECONDS + 6, f"the new tenant's first write came {first:.1f} s later"


@pytest.mark.security
def test_a_leader_cut_off_from_the_api_server_stops_and_exits_before_the_standby_leads(
    cluster: LocalCluster, replicas: Replicas, tmp_path: Path
) -> None:
    with TcpProxy("127.0.0.1", cluster.apiserver_port) as proxy:
        config = yaml.safe_load(Path(cluster.operator_env()["KUBECONFIG"]).read_text())
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
        proxied = tmp_path / "kubeconfig-proxied"
        proxied.write_text(yaml.safe_dump(config))
        proxied.chmod(0o600)
        cut = replicas.start("cut", FAST, lead=True, kubeconfig=proxied)
        cut_identity = cut.identity
        standby = replicas.start("standby", FAST, lead=False)
        assert holder(cluster) == cut_identity

        offset = cluster.audit_offset()
        proxy.blackhole()
        cut_at, cut_wall = time.monotonic(), time.time()
        replicas.apply_tenant("le-cut-off")
        code = cut.popen.wait(timeout=RENEW_DEADLINE_SECONDS + 10)
        exited, exited_wall = time.monotonic(), time.time()
        assert code == 1, cut.log_text()[-3000:]
        # Its last renew was at most a retry before the cut.
        assert exited - cut_at < RENEW_DEADLINE_SECONDS + 1.5, f"exited {exited - cut_at:.1f} s"
        assert "lost the leader lease" in cut.log_text()

        wait_for(standby.leads, timeout=LEASE_SECONDS + 5, interval=0.1, what="the standby to lead")
        taken = lease(cluster)["spec"]
        assert taken["holderIdentity"] == standby.identity
        # The cut-off leader had exited before the standby took the Lease: no overlap.
        assert exited_wall < parse_rfc3339(taken["acquireTime"]).timestamp()
        wait_ready(cluster, "le-cut-off")
        writes = operator_writes(cluster, offset)
        assert not [
            e for e in writes if cut_identity in e.get("userAgent", "") and received(e) > cut_wall
        ]
        mine = [e for e in writes if of_tenant(e, "le-cut-off")]
        assert mine
        assert all(standby.identity in e.get("userAgent", "") for e in mine)

"""The backup runner's egress on the real API server: its named destinations, nothing more.

Before issue 11 the runner's NetworkPolicy let its pods reach 0.0.0.0/0 and ::/0 on 443,
6443 and the S3 port; any pod wearing the runner's labels got the same way out. Here the
operator's backup reconciler writes the policy onto the local control plane and the test
reads back what the cluster holds: the API server's addresses, the object store's ranges
the CleoBackup names, and no range that spans everything. A store by host name without
`destination.s3.egress` gets no rule and a condition naming the field.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from cleo_operator.api.backup import parse_backup_spec
from cleo_operator.api.cidr import metadata_overlap
from cleo_operator.api.errors import SpecError
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import NAMESPACE, NETWORK_POLICY, TENANT
from cleo_operator.reconcile.backup import BackupReconciler, BackupSettings
from cleo_operator.render.backup import BackupPodSettings, store_egress_cidrs
from e2e.cluster import LocalCluster
from tests.integration.test_backup_cluster import (
    Site,
    b64,
    make_tenant,
    provide_claim,
    provide_secrets,
)

pytestmark = [
    pytest.mark.security,
    pytest.mark.cluster,
    pytest.mark.usefixtures("without_session_operator"),
]

API_SERVER = ("127.0.0.1/32",)
IMAGE = "registry.example/cleo-operator:test"


@pytest.fixture
def site(kube: KubeClient, crds_installed: None) -> Iterator[Site]:
    del crds_installed
    tenant = f"egr-{secrets.token_hex(4)}"
    namespace = make_tenant(kube, tenant)
    provide_secrets(kube, namespace)
    provide_claim(kube, namespace)
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "backup-s3", "namespace": namespace},
            "data": {"AWS_ACCESS_KEY_ID": b64("id"), "AWS_SECRET_ACCESS_KEY": b64("not-a-key")},
        }
    )
    yield Site(kube=kube, tenant=tenant, namespace=namespace)
    kube.delete(TENANT, tenant)
    kube.delete(NAMESPACE, namespace)


@pytest.fixture
def reconciler(kube: KubeClient) -> Iterator[BackupReconciler]:
    service = BackupReconciler(
        kube,
        settings=BackupSettings(
            pod=BackupPodSettings(
                image="registry.example/cleo-operator:test", api_server_cidrs=API_SERVER
            )
        ),
    )
    yield service
    service.close()


def s3(**extra: Any) -> dict[str, Any]:
    return {
        "type": "s3",
        "s3": {"bucket": "cleo-backups", "credentialsSecret": "backup-s3", **extra},
    }


def live_egress(kube: KubeClient, site: Site, name: str) -> list[dict[str, Any]]:
    policy = kube.get(NETWORK_POLICY, f"cleo-backup-{name}", namespace=site.namespace)
    assert policy is not None
    egress: list[dict[str, Any]] = policy["spec"].get("egress") or []
    for rule in egress:
        for peer in rule.get("to") or []:
            assert not peer["ipBlock"]["cidr"].endswith("/0"), json.dumps(policy)
    return egress


def test_the_runners_policy_names_only_the_api_server_and_the_store(
    kube: KubeClient, site: Site, reconciler: BackupReconciler
) -> None:
    site.backup(
        "nightly",
        {
            "schedule": "0 3 * * *",
            "destination": s3(endpoint="http://203.0.113.7:9000", egress=["198.51.100.0/24"]),
        },
    )

    reconciler.reconcile(site.namespace, "nightly")

    api, store = live_egress(kube, site, "nightly")
    assert api == {
        "to": [{"ipBlock": {"cidr": "127.0.0.1/32"}}],
        "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}],
    }
    assert store == {
        "to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}, {"ipBlock": {"cidr": "203.0.113.7/32"}}],
        "ports": [{"protocol": "TCP", "port": 9000}],
    }
    assert site.condition("nightly", "Ready")["reason"] != "EgressUnknown"


def test_a_store_by_name_without_egress_is_reported_and_never_opened(
    kube: KubeClient, site: Site, reconciler: BackupReconciler
) -> None:
    site.backup(
        "nightly",
        {"schedule": "0 3 * * *", "destination": s3(endpoint="https://minio.storage.svc:9000")},
    )

    reconciler.reconcile(site.namespace, "nightly")

    (api,) = live_egress(kube, site, "nightly")
    assert [p["ipBlock"]["cidr"] for p in api["to"]] == ["127.0.0.1/32"]
    ready = site.condition("nightly", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "EgressUnknown")
    assert ready["message"].startswith("spec.destination.s3.egress:")


def test_a_pvc_destination_opens_only_the_api_server(
    kube: KubeClient, site: Site, reconciler: BackupReconciler
) -> None:
    site.backup(
        "nightly",
        {"schedule": "0 3 * * *", "destination": {"type": "pvc", "pvc": {"claimName": "backups"}}},
    )

    reconciler.reconcile(site.namespace, "nightly")

    (api,) = live_egress(kube, site, "nightly")
    assert [p["port"] for p in api["ports"]] == [443, 6443]


def test_the_api_server_refuses_egress_that_is_not_an_address_range(
    cluster: LocalCluster, site: Site
) -> None:
    manifest = {
        "apiVersion": "cleoai.io/v1alpha1",
        "kind": "CleoBackup",
        "metadata": {"name": "bad", "namespace": site.namespace},
        "spec": {
            "tenant": site.tenant,
            "destination": s3(endpoint="https://minio.storage.svc:9000", egress=["the-store"]),
        },
    }
    result = cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert result.returncode != 0
    assert "spec.destination.s3.egress[0]" in result.stderr


@pytest.mark.parametrize(
    ("egress", "words"),
    [
        (["0.0.0.0/0"], "too wide"),
        (["::/0"], "too wide"),
        (["10.0.0.0/8", "64.0.0.0/2"], "too wide"),
        (["2000::/3"], "too wide"),
        (["256.1.1.1/32"], "spec.destination.s3.egress[0]"),
        (["10.0.0.0/33"], "spec.destination.s3.egress[0]"),
    ],
)
def test_the_api_server_refuses_egress_to_everywhere(
    cluster: LocalCluster, site: Site, egress: list[str], words: str
) -> None:
    # A tenant admin writes CleoBackups: a range spanning (nearly) every address would let
    # the runner's pods, which hold the database login and the keyring, reach anywhere.
    manifest = {
        "apiVersion": "cleoai.io/v1alpha1",
        "kind": "CleoBackup",
        "metadata": {"name": "wide", "namespace": site.namespace},
        "spec": {"tenant": site.tenant, "destination": s3(egress=egress)},
    }
    result = cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert result.returncode != 0
    assert words in result.stderr
    assert "spec.destination.s3.egress" in result.stderr


@pytest.mark.parametrize(
    ("block", "words"),
    [
        ({"bucket": "cleo-backups"}, "set exactly one of credentialsSecret"),
        (
            {
                "bucket": "cleo-backups",
                "credentialsSecret": "backup-s3",
                "instanceMetadata": True,
            },
            "set exactly one of credentialsSecret",
        ),
    ],
)
def test_the_api_server_wants_exactly_one_credential_source(
    cluster: LocalCluster, site: Site, block: dict[str, Any], words: str
) -> None:
    manifest = {
        "apiVersion": "cleoai.io/v1alpha1",
        "kind": "CleoBackup",
        "metadata": {"name": "creds", "namespace": site.namespace},
        "spec": {"tenant": site.tenant, "destination": {"type": "s3", "s3": block}},
    }
    result = cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert result.returncode != 0
    assert words in result.stderr


def test_instance_metadata_opens_only_when_the_backup_asks_for_it(
    kube: KubeClient, site: Site, reconciler: BackupReconciler
) -> None:
    # The metadata address hands out the node's credentials: a Secret-keyed runner never
    # reaches it; one that asks for the node's identity reaches that address on port 80 only.
    keyed = s3(egress=["198.51.100.0/24"])
    site.backup("keyed", {"schedule": "0 3 * * *", "destination": keyed})
    node = {
        "type": "s3",
        "s3": {"bucket": "cleo-backups", "egress": ["198.51.100.0/24"], "instanceMetadata": True},
    }
    site.backup("node", {"schedule": "0 3 * * *", "destination": node})

    reconciler.reconcile(site.namespace, "keyed")
    reconciler.reconcile(site.namespace, "node")

    def cidrs(name: str) -> set[str]:
        return {p["ipBlock"]["cidr"] for r in live_egress(kube, site, name) for p in r["to"]}

    assert "169.254.169.254/32" not in cidrs("keyed")
    metadata = [
        r
        for r in live_egress(kube, site, "node")
        if r["to"][0]["ipBlock"]["cidr"].startswith("169.254.")
    ]
    assert metadata == [
        {
            "to": [{"ipBlock": {"cidr": "169.254.169.254/32"}}],
            "ports": [{"protocol": "TCP", "port": 80}],
        }
    ]


METADATA_BREACHES = [
    ({"egress": ["169.254.0.0/16"]}, "spec.destination.s3.egress"),
    ({"egress": ["10.0.0.0/8", "169.0.0.0/8"]}, "spec.destination.s3.egress"),
    ({"egress": ["169.254.169.254/32"]}, "spec.destination.s3.egress"),
    ({"egress": ["64:ff9b::/96"]}, "spec.destination.s3.egress"),
    ({"egress": ["::/24"]}, "spec.destination.s3.egress"),
    ({"egress": ["0:0:0:0:0:ffff::/96"]}, "spec.destination.s3.egress"),
    ({"egress": ["FD00:EC2::/32"]}, "spec.destination.s3.egress"),
    ({"endpoint": "http://169.254.169.254"}, "spec.destination.s3.endpoint"),
    ({"endpoint": "http://x@169.254.170.2:80/"}, "spec.destination.s3.endpoint"),
    ({"endpoint": "http://2852039166/"}, "spec.destination.s3.endpoint"),
    ({"endpoint": "http://169.254.43518"}, "spec.destination.s3.endpoint"),
    ({"endpoint": "http://[fd00:ec2::254]"}, "spec.destination.s3.endpoint"),
    ({"endpoint": "http://[::ffff:a9fe:a9fe]"}, "spec.destination.s3.endpoint"),
]


@pytest.mark.parametrize(("block", "field"), METADATA_BREACHES)
def test_no_egress_range_or_endpoint_covers_a_metadata_address_without_instance_metadata(
    cluster: LocalCluster, site: Site, block: dict[str, Any], field: str
) -> None:
    # The metadata services hand out the node's (or the platform's) credentials; NAT64
    # and IPv4-mapped ranges reach them over IPv6. Both the API server's rule and the
    # operator's model refuse, naming the field.
    destination = s3(**{"egress": ["198.51.100.0/24"], **block})
    manifest = {
        "apiVersion": "cleoai.io/v1alpha1",
        "kind": "CleoBackup",
        "metadata": {"name": "meta", "namespace": site.namespace},
        "spec": {"tenant": site.tenant, "destination": destination},
    }
    result = cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert result.returncode != 0, result.stdout
    assert field in result.stderr
    assert "metadata" in result.stderr
    with pytest.raises(SpecError, match="metadata") as refused:
        parse_backup_spec(manifest["spec"])
    assert str(refused.value).startswith(field)


def test_the_metadata_opening_is_only_what_instance_metadata_renders(
    cluster: LocalCluster, site: Site
) -> None:
    neighbours = {"egress": ["169.0.0.0/9", "2600:1f00::/24", "fd00:ec3:1::/48"]}
    node = s3(instanceMetadata=True, egress=["169.254.169.254/32", "198.51.100.0/24"])
    del node["s3"]["credentialsSecret"]
    for name, destination in (("neighbours", s3(**neighbours)), ("node", node)):
        manifest = {
            "apiVersion": "cleoai.io/v1alpha1",
            "kind": "CleoBackup",
            "metadata": {"name": name, "namespace": site.namespace},
            "spec": {"tenant": site.tenant, "destination": destination},
        }
        result = cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
        if name == "neighbours":
            # fd00:ec3:1::/48 shares fd00:e00::/24 with AWS's fd00:ec2::/32: the rule
            # compares whole /24 blocks of IPv6.
            assert result.returncode != 0
            assert "spec.destination.s3.egress" in result.stderr
            manifest["spec"]["destination"]["s3"]["egress"] = neighbours["egress"][:2]
            result = cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
        assert result.returncode == 0, result.stderr
        parse_backup_spec(manifest["spec"])
    spec = parse_backup_spec({"tenant": site.tenant, "destination": s3(egress=["198.51.100.0/24"])})
    assert not any(metadata_overlap(c) for c in store_egress_cidrs(spec))

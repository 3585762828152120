"""A tenant admin with `kubectl cleo`: their own tenant only, and refusals that say so.

The attacker holds `cleo-tenant-admin` in their own tenant's namespace and asks the plugin
about another tenant. The plugin must show nothing of it (no child, no backup, no name), and
must say "forbidden", the same for a tenant that exists and one that does not, so the
answer is no oracle of which tenants exist.
"""

from __future__ import annotations

import pytest

from cleo_operator.cli.plugin import main
from cleo_operator.kube.client import KubeClient
from e2e.cluster import LocalCluster
from tests.integration.plugin_support import TENANT_B, PluginWorld, make_world, namespace_of

pytestmark = [pytest.mark.cluster, pytest.mark.security]


@pytest.fixture(scope="module")
def world(cluster: LocalCluster, kube: KubeClient, crds_installed: None) -> PluginWorld:
    del crds_installed
    return make_world(cluster, kube)


def test_a_tenant_admin_sees_nothing_of_another_tenant_and_is_told_it_is_forbidden(
    world: PluginWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    as_attacker = ["--kubeconfig", str(world.tenant_admin)]
    for command in ("status", "backups"):
        for output in ("table", "json"):
            code = main([command, TENANT_B, *as_attacker, "-o", output])
            out, err = capsys.readouterr()
            assert code == 1, (command, output)
            assert out == ""
            assert "you may not" in err
            assert "not found" not in err
            for leaked in ("nightly", "cleoai-config", "20261203T030000Z"):
                assert leaked not in err
    main(["status", TENANT_B, *as_attacker])
    assert capsys.readouterr().err == (
        f"error: nothing of tenant {TENANT_B} is yours to see: you may not get "
        "cleotenants.cleoai.io at cluster scope, and you may not read its objects in namespace "
        f"{namespace_of(TENANT_B)}\n"
    )
    for command in (["backups"], ["backup", "now"]):
        assert main([*command, TENANT_B, *as_attacker]) == 1
        assert capsys.readouterr().err == (
            f"error: you may not list cleobackups.cleoai.io in namespace {namespace_of(TENANT_B)}\n"
        )
    # Naming the other tenant's backup as the source changes nothing: it is never read.
    assert main(["backup", "now", TENANT_B, "--from", "nightly", *as_attacker]) == 1
    assert "you may not list cleobackups.cleoai.io" in capsys.readouterr().err


def test_a_tenant_that_does_not_exist_gets_the_same_answer_as_one_that_does(
    world: PluginWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    as_attacker = ["--kubeconfig", str(world.tenant_admin)]
    answers = []
    for tenant in (TENANT_B, "no-such-tenant"):
        assert main(["status", tenant, *as_attacker]) == 1
        answers.append(capsys.readouterr().err.replace(tenant, "T"))
    assert answers[0] == answers[1]


def test_pointing_at_the_attackers_own_namespace_shows_none_of_the_other_tenant(
    world: PluginWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    """-n naming the namespace they may read: the other tenant's objects are not there, and
    the plugin lists only what carries that tenant's labels (which admission keeps to the
    operator), so nothing of tenant B appears."""
    code = main(
        ["status", TENANT_B, "-n", "cleo-plug-a", "--kubeconfig", str(world.tenant_admin),
         "-o", "json"]
    )  # fmt: skip
    out, _ = capsys.readouterr()
    assert code == 0
    assert "nightly" not in out
    assert "cleoai-config" not in out

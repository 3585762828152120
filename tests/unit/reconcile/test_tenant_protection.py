"""Tenant admins are bound to the role that lets them ask for backups only while the
tenant-protection policy that narrows it is in place (in-memory API server; the control
plane proof is tests/security/test_tenant_one_off_backups.py)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from cleo_operator.kube.kinds import ADMISSION_POLICY, ADMISSION_POLICY_BINDING, ROLE_BINDING
from cleo_operator.reconcile.tenant import TenantReconciler
from cleo_operator.reconcile.tenant_protection import TenantProtection
from cleo_operator.render.rbac import BACKUP_REQUESTER_ROLE
from tests.harness.fake_kube import FakeKube
from tests.unit.reconcile.test_tenant_decisions import add_tenant, spec

pytestmark = pytest.mark.security

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
POLICY = "cleo-tenant-protection"


def install_policy(kube: FakeKube, actions: tuple[str, ...] = ("Deny",)) -> None:
    kube.create(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": POLICY},
            "spec": {"failurePolicy": "Fail", "validations": [{"expression": "true"}]},
        }
    )
    kube.create(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": POLICY},
            "spec": {"policyName": POLICY, "validationActions": list(actions)},
        }
    )


def test_the_policy_counts_only_with_a_binding_that_denies() -> None:
    kube = FakeKube(now=lambda: NOW)
    assert not TenantProtection(kube, ttl_seconds=0).in_place()
    install_policy(kube, actions=("Warn", "Audit"))
    assert not TenantProtection(kube, ttl_seconds=0).in_place()
    kube.delete(ADMISSION_POLICY_BINDING, POLICY)
    install_policy_binding_only = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY},
        "spec": {"policyName": POLICY, "validationActions": ["Deny"]},
    }
    kube.create(install_policy_binding_only)
    assert TenantProtection(kube, ttl_seconds=0).in_place()
    kube.delete(ADMISSION_POLICY, POLICY)
    assert not TenantProtection(kube, ttl_seconds=0).in_place()


def requester_binding(kube: FakeKube, namespace: str) -> dict[str, Any] | None:
    return kube.get(ROLE_BINDING, BACKUP_REQUESTER_ROLE, namespace=namespace)


def test_admins_are_bound_to_ask_for_backups_only_while_the_policy_is_in_place() -> None:
    clock = {"now": NOW}
    kube = FakeKube(now=lambda: clock["now"])
    protection = TenantProtection(kube, ttl_seconds=60, now=lambda: clock["now"])
    tenants = TenantReconciler(
        kube, operator_namespace="cleo-system", now=lambda: clock["now"], protection=protection
    )
    add_tenant(kube, "acme", spec())
    tenants.reconcile("acme")
    assert requester_binding(kube, "cleo-acme") is None  # no policy: no grant
    install_policy(kube)
    clock["now"] += datetime.timedelta(seconds=61)
    tenants.reconcile("acme")
    binding = requester_binding(kube, "cleo-acme")
    assert binding is not None
    assert binding["roleRef"]["name"] == BACKUP_REQUESTER_ROLE
    assert binding["subjects"] == [
        {"kind": "Group", "name": "acme-ops", "apiGroup": "rbac.authorization.k8s.io"}
    ]
    # An admin unbinds the policy for a repair: the grant goes with it.
    kube.delete(ADMISSION_POLICY_BINDING, POLICY)
    clock["now"] += datetime.timedelta(seconds=61)
    tenants.reconcile("acme")
    assert requester_binding(kube, "cleo-acme") is None

"""deploy/admission/tenant-protection.yaml: its shape (the cluster tests prove what it does)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cleo_operator.api.backup import CleoBackupSpec
from cleo_operator.kube.keys import TENANT_KEYRING_SECRET
from cleo_operator.reconcile.database import CREDENTIALS_SECRET
from cleo_operator.reconcile.final_backup import FINAL_BACKUP_NAME
from cleo_operator.reconcile.keys import QUARANTINE_PREFIX
from cleo_operator.reconcile.pooler import CHECK_POLICY
from cleo_operator.render.backup import APP_NAME, BACKUP_LABEL, NAME_PREFIX, render_backup
from cleo_operator.render.child import CONFIG_MAP_NAME, WORKLOAD_NAME
from cleo_operator.render.limits import LIMIT_RANGE_NAME, RESOURCE_QUOTA_NAME
from cleo_operator.render.meta import MANAGED_BY, MANAGED_BY_LABEL, ORPHANED_LABEL, TENANT_LABEL
from cleo_operator.render.pooler import POOLER_NAME
from cleo_operator.render.pull_secrets import pull_secret_copy_name
from cleo_operator.render.rbac import OperatorAccess
from cleo_operator.render.tenant import render_tenant
from tests.unit.render.specs import TENANT, UID, spec_of
from tests.unit.test_render_backup import ONE_OFF, PVC_SPEC, SETTINGS

POLICY = Path(__file__).resolve().parents[2] / "deploy" / "admission" / "tenant-protection.yaml"


def _objects() -> dict[str, Any]:
    return {d["kind"]: d for d in yaml.safe_load_all(POLICY.read_text()) if d}


def test_the_policy_is_bound_to_deny_in_tenant_namespaces_only() -> None:
    objects = _objects()
    policy = objects["ValidatingAdmissionPolicy"]
    binding = objects["ValidatingAdmissionPolicyBinding"]
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    assert policy["spec"]["failurePolicy"] == "Fail"
    selector = policy["spec"]["matchConstraints"]["namespaceSelector"]
    assert selector == {"matchExpressions": [{"key": TENANT_LABEL, "operator": "Exists"}]}


def test_it_trusts_the_default_operator_identity_once() -> None:
    text = POLICY.read_text()
    assert text.count('"system:serviceaccount:cleo-system:cleo-operator"') == 1


def test_it_knows_the_labels_the_operator_and_the_runner_use() -> None:
    variables = {
        v["name"]: v["expression"]
        for v in _objects()["ValidatingAdmissionPolicy"]["spec"]["variables"]
    }
    # One predicate for the old and the new object's labels (protectedSets, indexed by
    # newProtected and oldProtected), so the two can never drift apart.
    expression = variables["protectedSets"]
    assert f'"{MANAGED_BY_LABEL}"' in expression
    assert f'"{MANAGED_BY}"' in expression
    assert f'"{BACKUP_LABEL}"' in expression
    assert f'"{APP_NAME}"' in expression
    assert '"cleo-pooler"' in expression
    assert "variables.oldLabels" in expression
    assert "protectedSets" in variables["newProtected"]
    assert variables["oldProtected"].strip() == "variables.protectedSets[4]"
    assert f'"{ORPHANED_LABEL}"' in variables["released"]


def test_every_refusal_says_who_what_and_why() -> None:
    for validation in _objects()["ValidatingAdmissionPolicy"]["spec"]["validations"]:
        assert validation["reason"] == "Forbidden"
        message = validation["messageExpression"]
        assert message.startswith('"cleo-tenant-protection: " + request.userInfo.username')
        assert "variables.what" in message


def _reserved(name: str) -> bool:
    """The policy's reservedName rule, in Python (its cluster tests prove the CEL)."""
    return name.startswith("cleo-") or name == "cleoai" or name.startswith("cleoai-")


@pytest.mark.security
def test_every_name_the_operator_gives_in_a_tenant_namespace_is_reserved() -> None:
    """A name the operator renders but the policy does not reserve could be squatted before
    the operator makes its object (and kept, fields and all, by its server-side apply)."""
    access = OperatorAccess(role="cleo-operator-tenant", username="system:serviceaccount:x:y")
    tenant = render_tenant(
        name=TENANT, uid=UID, spec=spec_of(), config_checksum="c", operator_access=access
    )
    names = {o["metadata"]["name"] for o in tenant if o["kind"] != "Namespace"}
    for spec in (PVC_SPEC, ONE_OFF):
        for obj in render_backup(
            name="nightly",
            namespace="acme-prod",
            uid=UID,
            tenant=TENANT,
            spec=CleoBackupSpec.model_validate(spec),
            settings=SETTINGS,
        ):
            names.add(obj["metadata"]["name"])
    names |= {
        TENANT_KEYRING_SECRET,
        CREDENTIALS_SECRET,
        FINAL_BACKUP_NAME,
        f"{QUARANTINE_PREFIX}x",
        RESOURCE_QUOTA_NAME,
        LIMIT_RANGE_NAME,
        CONFIG_MAP_NAME,
        WORKLOAD_NAME,
        pull_secret_copy_name("regcred"),
        pull_secret_copy_name("r" * 253),
        POOLER_NAME,
        CHECK_POLICY,
    }
    assert {"cleoai", "cleo-operator", "cleo-keyring", "cleo-backup-nightly"} <= names
    assert [n for n in sorted(names) if not _reserved(n)] == []
    # The tenant's own names stay the tenant's.
    assert not _reserved("cleopatra")
    assert not _reserved("nightly")


def test_the_policy_reserves_those_names_and_the_runners_service_accounts() -> None:
    variables = {
        v["name"]: v["expression"]
        for v in _objects()["ValidatingAdmissionPolicy"]["spec"]["variables"]
    }
    reserved = variables["reservedName"]
    assert 'startsWith("cleo-")' in reserved
    assert '== "cleoai"' in reserved
    assert 'startsWith("cleoai-")' in reserved
    assert 'request.resource.resource != "events"' in reserved
    assert reserved.count("variables.requestedName") == 3
    assert f'startsWith("{NAME_PREFIX}")' in variables["runnerServiceAccount"]
    validations = _objects()["ValidatingAdmissionPolicy"]["spec"]["validations"]
    assert not any('"cleo-keyring"' in v["expression"] for v in validations)


ONE_OFF_FIELDS = {"tenant", "from", "suspend", "concurrencyPolicy", "historyLimit"}
"""What a tenant admin's one-off may set: who, which CleoBackup to run, and fields that aim
nothing (suspend and concurrencyPolicy mean nothing without a schedule; historyLimit sizes
the object's own status)."""


@pytest.mark.security
def test_a_tenant_admins_one_off_may_set_no_field_that_aims_the_runner() -> None:
    """Every other field of CleoBackupSpec must be refused by name: a field added to the
    model later fails here until the policy refuses it (or it is judged harmless above)."""
    variables = {
        v["name"]: v["expression"]
        for v in _objects()["ValidatingAdmissionPolicy"]["spec"]["variables"]
    }
    fields = {field.alias or name for name, field in CleoBackupSpec.model_fields.items()}
    assert fields >= ONE_OFF_FIELDS
    assert "timeZone" in fields  # the API's names
    for variable, obj in (("newOneOff", "object"), ("oldOneOff", "oldObject")):
        expression = " ".join(variables[variable].split())
        assert f"has({obj}.spec.from)" in expression
        for field in sorted(fields - ONE_OFF_FIELDS):
            assert f"!has({obj}.spec.{field})" in expression, (variable, field)

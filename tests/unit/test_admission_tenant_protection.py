"""deploy/admission/tenant-protection.yaml: its shape (the cluster tests prove what it does)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cleo_operator.render.backup import APP_NAME, BACKUP_LABEL
from cleo_operator.render.meta import MANAGED_BY, MANAGED_BY_LABEL, ORPHANED_LABEL, TENANT_LABEL

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
    for expression in (variables["newProtected"], variables["oldProtected"]):
        assert f'"{MANAGED_BY_LABEL}"' in expression
        assert f'"{MANAGED_BY}"' in expression
        assert f'"{BACKUP_LABEL}"' in expression
        assert f'"{APP_NAME}"' in expression
    assert f'"{ORPHANED_LABEL}"' in variables["released"]


def test_every_refusal_says_who_what_and_why() -> None:
    for validation in _objects()["ValidatingAdmissionPolicy"]["spec"]["validations"]:
        assert validation["reason"] == "Forbidden"
        message = validation["messageExpression"]
        assert message.startswith('"cleo-tenant-protection: " + request.userInfo.username')
        assert "variables.what" in message

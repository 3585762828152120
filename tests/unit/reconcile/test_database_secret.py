"""The credentials Secret: what it holds, how it is labelled, and when a stored one is unusable."""

from __future__ import annotations

import base64
import datetime
from typing import Any
from urllib.parse import quote

import pytest

from cleo_operator.api.objects import KubeObject
from cleo_operator.data.sites import SiteConfig
from cleo_operator.kube.client import KubeError
from cleo_operator.reconcile.database_errors import SecretWriteFailed, secret_write_failed
from cleo_operator.reconcile.database_passwords import (
    StoredPassword,
    new_password,
    password_fingerprint,
)
from cleo_operator.reconcile.database_secret import (
    FINGERPRINT_ANNOTATION,
    PASSWORD_KEY,
    ROTATED_AT_ANNOTATION,
    ROTATION_REQUEST_ANNOTATION,
    SECRET_KEYS,
    credentials_secret_ref,
    live_fingerprint,
    read_stored_password,
    render_credentials_secret,
)
from cleo_operator.render.meta import tenant_owner

NOW = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)
SITE = SiteConfig(name="eu", host="db.eu.internal", port=5433, sslmode="require")
REF = credentials_secret_ref(namespace="tenant-acme", name="cleo-database")
OWNER = tenant_owner(name="acme", uid="uid-1")


def record(password: str, *, request: str | None = "r1") -> StoredPassword:
    return StoredPassword(
        password=password,
        fingerprint=password_fingerprint(tenant="acme", password=password),
        rotated_at=NOW,
        rotation_request=request,
    )


def render(password: str, *, site: SiteConfig = SITE, request: str | None = "r1") -> KubeObject:
    return render_credentials_secret(
        REF, tenant="acme", owner=OWNER, site=site, record=record(password, request=request)
    )


def decoded(secret: KubeObject) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def test_the_rendered_secret_holds_libpq_variables_and_a_url() -> None:
    password = new_password()
    secret = render(password)
    values = decoded(secret)
    assert set(values) <= set(SECRET_KEYS)
    assert {"PGHOST", "PGPORT", "PGDATABASE", "PGUSER", PASSWORD_KEY, "DATABASE_URL"} <= set(values)
    assert values["PGHOST"] == "db.eu.internal"
    assert values["PGPORT"] == "5433"
    assert values[PASSWORD_KEY] == password
    assert values["DATABASE_URL"].startswith("postgresql://")
    assert list(secret["data"]) == sorted(secret["data"])  # stable bytes, stable hashes
    assert secret["type"] == "Opaque"


def test_the_rendered_secret_is_the_tenants_child_and_records_what_was_handled() -> None:
    password = new_password()
    secret = render(password)
    meta = secret["metadata"]
    assert (meta["namespace"], meta["name"]) == ("tenant-acme", "cleo-database")
    assert meta["labels"] == {
        "app.kubernetes.io/component": "database",
        "app.kubernetes.io/managed-by": "cleo-operator",
        "cleoai.io/tenant": "acme",
    }
    assert meta["ownerReferences"] == [OWNER]
    assert meta["annotations"] == {
        FINGERPRINT_ANNOTATION: password_fingerprint(tenant="acme", password=password),
        ROTATED_AT_ANNOTATION: "2025-01-01T12:00:00Z",
        ROTATION_REQUEST_ANNOTATION: "r1",
    }
    assert password not in str(meta)
    assert (
        ROTATION_REQUEST_ANNOTATION not in render(password, request=None)["metadata"]["annotations"]
    )


def test_a_rendered_secret_reads_back_as_the_record_it_was_made_from() -> None:
    password = new_password()
    stored, why = read_stored_password(render(password), tenant="acme")
    assert why == ""
    assert stored == record(password)


def edited(secret: KubeObject, **data: str) -> KubeObject:
    copy: dict[str, Any] = {**secret, "data": {**secret["data"], **data}}
    return copy


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        (None, "does not exist"),
        (edited(render(new_password()), PGPASSWORD=""), f"no readable {PASSWORD_KEY}"),
        (edited(render(new_password()), PGPASSWORD="%%not base64%%"), "no readable"),
        (
            edited(render(new_password()), PGPASSWORD=base64.b64encode(b"h" * 43).decode()),
            "changed by hand",
        ),
    ],
    ids=["missing", "empty", "garbled", "edited-by-hand"],
)
def test_a_stored_secret_that_is_unusable_says_why(secret: KubeObject | None, why: str) -> None:
    stored, reason = read_stored_password(secret, tenant="acme")
    assert stored is None
    assert why in reason


def test_a_secret_of_another_tenant_is_unusable_here() -> None:
    stored, reason = read_stored_password(render(new_password()), tenant="other")
    assert stored is None
    assert "changed by hand" in reason


def test_the_pods_fingerprint_follows_every_value_and_only_our_keys() -> None:
    password = new_password()
    secret = render(password)
    first = live_fingerprint(secret)
    assert first is not None
    assert password not in first
    moved = render(password, site=SiteConfig(name="us", host="db.us.internal"))
    assert live_fingerprint(moved) != first
    assert live_fingerprint(render(new_password())) != first
    assert live_fingerprint(edited(secret, EXTRA=base64.b64encode(b"x").decode())) == first
    assert live_fingerprint(None) is None


def test_a_secret_write_failure_names_the_secret_and_holds_no_form_of_the_password() -> None:
    password = "pa ss/word+" + "x" * 40
    forms = (password, quote(password, safe=""), base64.b64encode(password.encode()).decode())
    exc = KubeError(
        status=403,
        reason="Forbidden",
        message=f"denied: {forms[0]} {forms[1]} {forms[2]}",
        what="apply Secret",
    )
    error = secret_write_failed(exc, secret=REF, site="eu", password=password)
    assert isinstance(error, SecretWriteFailed)
    assert error.reason == "SecretWriteFailed"
    assert "tenant-acme/cleo-database" in str(error)
    assert "403 Forbidden" in str(error)
    assert all(form not in str(error) for form in forms)

"""The throwaway verification login's name can never be a tenant's role."""

from __future__ import annotations

import pytest

from cleo_operator.backup.restore import RESTORE_TIMEOUT_SECONDS
from cleo_operator.backup.scratch import (
    SCRATCH_DATABASE_PREFIX,
    VERIFIER_LIFETIME,
    VERIFIER_ROLE_MARKER,
    VERIFIER_ROLE_PREFIX,
)
from cleo_operator.data.tenant_db import MARKER_PREFIX, tenant_role_name


@pytest.mark.parametrize(
    "tenant", ["a", "verifier", "verifier-1", "-verifier", "v--x", "0", "x" * 58, "cleo"]
)
def test_no_tenant_role_starts_with_the_verifier_prefix(tenant: str) -> None:
    try:
        role = tenant_role_name(tenant)
    except ValueError:
        return  # not a tenant name at all
    assert not role.startswith(VERIFIER_ROLE_PREFIX)


def test_the_prefix_needs_a_character_no_tenant_role_has_there() -> None:
    # Tenant roles are "cleo_" and a letter or digit; the verifier's is "cleo_" and "_".
    assert VERIFIER_ROLE_PREFIX.startswith("cleo__")
    # The leftover marker is not a tenant's ownership marker, so cleanup never takes one.
    assert not VERIFIER_ROLE_MARKER.startswith(MARKER_PREFIX)
    # 16 random hex digits after the prefix still fit PostgreSQL's 63-byte names.
    assert len(VERIFIER_ROLE_PREFIX) + 16 <= 63
    assert SCRATCH_DATABASE_PREFIX == "cleo_verify_"
    # A verification ends (pg_restore is stopped) well before its login expires.
    assert VERIFIER_LIFETIME.total_seconds() > 2 * RESTORE_TIMEOUT_SECONDS

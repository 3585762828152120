"""Module marks shared by the tests that run the operator's reconcilers in the test process."""

from __future__ import annotations

import pytest

RECONCILERS_ALONE = [
    pytest.mark.cluster,
    pytest.mark.postgres,
    pytest.mark.usefixtures("without_session_operator"),
]
"""On the local control plane and a real PostgreSQL server, with the reconcilers run here:
no operator process may race them, so the session's operator is stopped for these tests."""

"""Fault points: kill the process right after a step has acted, before its status is written.

For crash tests (and for rehearsing operator crashes on a staging cluster):
``CLEO_FAILOVER_FAULT_POINT=<step>`` makes the process SIGKILL itself right after the named
step has done its work and before the step's outcome reaches status, the worst moment:
the world has changed and the record says the step is still Running. The next reconcile
must run that step again (each step is idempotent) and go on. When the variable is unset,
:func:`fault_point` does nothing.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping
from typing import Final

from cleo_operator.failover.steps import STEP_NAMES

__all__ = ["FAULT_POINT_ENV", "check_fault_point_env", "fault_point"]

logger = logging.getLogger(__name__)

FAULT_POINT_ENV: Final = "CLEO_FAILOVER_FAULT_POINT"
"""Name of a step; the process SIGKILLs itself right after that step acted."""


def check_fault_point_env(environ: Mapping[str, str] = os.environ) -> None:
    """Refuse a fault point that names no step (a typo would silently test nothing)."""
    value = environ.get(FAULT_POINT_ENV)
    if value and value not in STEP_NAMES:
        raise ValueError(
            f"${FAULT_POINT_ENV}={value!r} names no failover step; use one of "
            f"{', '.join(STEP_NAMES)}"
        )


def fault_point(step: str) -> None:
    """SIGKILL this process if ``$CLEO_FAILOVER_FAULT_POINT`` names ``step``."""
    if os.environ.get(FAULT_POINT_ENV) == step:
        logger.warning("fault point %s reached: killing the process", step)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)

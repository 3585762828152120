"""A tenant's reconciles and its deletion never overlap, across a deletion and a re-creation
of the same name (reconcile/tenant.py, `_TenantLocks`), with real threads.

The lock of a deleted tenant used to be dropped as soon as its finalizer ended, even while
a reconcile of the old tenant still waited for it: that reconcile then ran on the dropped
lock and one of the re-created tenant on a fresh one, both at once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from cleo_operator.kube.kinds import TENANT
from cleo_operator.reconcile.tenant import TenantReconciler
from tests.harness.fake_kube import FakeKube


class HeldRead(FakeKube):
    """The API server as the finalizer sees it: its read of the tenant waits for `go`."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = threading.Event()
        self.go = threading.Event()

    def request(self, method: str, path: str, **options: Any) -> Any:
        if method == "GET" and path == TENANT.path(name="t"):
            self.reading.set()
            assert self.go.wait(10)
        return super().request(method, path, **options)


def test_a_reconcile_waiting_through_the_deletion_never_runs_beside_the_next_tenants() -> None:
    view = HeldRead()
    reconciler = TenantReconciler(view)
    locks = reconciler._locks
    old_inside, old_leave = threading.Event(), threading.Event()
    new_inside = threading.Event()

    def old_reconcile() -> None:  # read the tenant before its deletion; waits for the lock
        with locks.hold("t"):
            old_inside.set()
            assert old_leave.wait(10)

    def new_reconcile() -> None:  # the re-created tenant of the same name
        with locks.hold("t"):
            new_inside.set()

    finalizer = threading.Thread(target=reconciler.finalize, args=("t",))
    finalizer.start()
    assert view.reading.wait(10)  # the finalizer holds the lock
    old = threading.Thread(target=old_reconcile)
    old.start()
    time.sleep(0.2)  # the old reconcile now waits for the finalizer's lock
    view.go.set()
    finalizer.join(10)
    assert old_inside.wait(10)
    new = threading.Thread(target=new_reconcile)
    new.start()
    try:
        assert not new_inside.wait(0.5), "two reconciles of tenant t ran at once"
    finally:
        old_leave.set()
        old.join(10)
        new.join(10)
    assert new_inside.is_set()
    assert len(locks) == 0, "no lock kept for a name nobody holds or waits for"

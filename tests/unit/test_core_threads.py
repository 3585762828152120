"""`core.threads.executors_ended`: a bounded wait for shut-down thread pools, real threads."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from cleo_operator.core.threads import executors_ended


def test_pools_end_when_their_running_work_ended_and_queued_work_is_dropped() -> None:
    busy, idle = ThreadPoolExecutor(max_workers=1), ThreadPoolExecutor(max_workers=2)
    go = threading.Event()
    try:
        running = busy.submit(go.wait, 10)
        queued = busy.submit(lambda: "never")
        idle.submit(lambda: None).result(5)
        started = time.monotonic()
        assert not executors_ended([busy, idle], 0.3)
        assert 0.25 < time.monotonic() - started < 5
        assert queued.cancelled()
        go.set()
        assert executors_ended([busy, idle], 5)
        assert running.result() is True
    finally:
        go.set()

"""Waiting, for a bounded time, until thread pools that were shut down have ended.

`ThreadPoolExecutor.shutdown(wait=True)` waits without a bound, and a pool's futures say
nothing of the work it runs that nobody waits for (a reconcile's future is Kopf's, gone
with Kopf). What a graceful stop needs (cli/run.py: the leader waits for its work to end
before it gives the lease up) is the pool's threads: each ends after its current work
item once the pool is shut down.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["executors_ended"]


def executors_ended(executors: Iterable[ThreadPoolExecutor], timeout: float) -> bool:
    """Shut `executors` down (queued work cancelled, running work left to end), then wait
    until their threads ended, `timeout` seconds at most; False when some still run."""
    deadline = time.monotonic() + timeout
    pools = list(executors)
    for pool in pools:
        pool.shutdown(wait=False, cancel_futures=True)
    # The threads of a pool are only in its private set: no public way to wait for them.
    threads = [thread for pool in pools for thread in list(pool._threads)]
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread in threads)

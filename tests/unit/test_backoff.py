"""The reconcile loops' backoff: exponential ceilings, full jitter, a bounded resync."""

from __future__ import annotations

import random
import statistics

import pytest

from cleo_operator.handlers.loop import Backoff


def seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - retry timing, not secrets


def test_ceilings_double_from_one_second_up_to_the_limit() -> None:
    backoff = Backoff(limit=60.0, rng=seeded(1))
    ceilings = []
    for _ in range(9):
        backoff.failed()
        ceilings.append(backoff.ceiling())
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_every_wait_is_within_the_floor_and_its_ceiling() -> None:
    backoff = Backoff(limit=30.0, rng=seeded(7))
    for _ in range(200):
        delay = backoff.failed()
        assert backoff.floor <= delay <= backoff.ceiling()


def test_a_success_starts_again_from_the_shortest_window() -> None:
    backoff = Backoff(rng=seeded(3))
    for _ in range(10):
        backoff.failed()
    backoff.succeeded()
    assert backoff.failed() <= 1.0
    assert backoff.ceiling() == 1.0


def test_a_thousand_loops_failing_together_come_back_spread_out() -> None:
    # After an outage every loop has failed six times in a row: a 32 s window.
    rng = seeded(2026)
    delays = []
    for _ in range(1000):
        backoff = Backoff(rng=rng)
        for _ in range(5):
            backoff.failed()
        delays.append(backoff.failed())
    assert min(delays) >= 0.1
    assert max(delays) <= 32.0
    # Uniform over [0, 32]: mean near 16, and no one-second slot holds more than 8 %.
    assert 14.0 < statistics.mean(delays) < 18.0
    per_second = [sum(1 for d in delays if s <= d < s + 1) for s in range(32)]
    assert max(per_second) < 80
    # Fixed steps (the old 1, 2, 4 ... 32) would have put all thousand in one instant.
    assert len({round(d, 3) for d in delays}) > 900


def test_the_same_seed_gives_the_same_waits() -> None:
    first = Backoff(rng=seeded(5))
    second = Backoff(rng=seeded(5))
    assert [first.failed() for _ in range(5)] == [second.failed() for _ in range(5)]


@pytest.mark.parametrize("period", [30.0, 300.0])
def test_the_resync_is_spread_but_never_later_than_promised(period: float) -> None:
    backoff = Backoff(rng=seeded(11))
    waits = [backoff.resync(period) for _ in range(500)]
    assert all(0.8 * period <= w <= period for w in waits)
    assert max(waits) - min(waits) > 0.15 * period


def test_a_conflict_retries_within_a_second() -> None:
    backoff = Backoff(rng=seeded(13))
    waits = [backoff.conflict() for _ in range(200)]
    assert all(0.1 <= w <= 1.0 for w in waits)
    assert backoff.failures == 0  # a conflict is not a failure: the window does not grow

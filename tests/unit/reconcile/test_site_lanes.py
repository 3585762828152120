"""Per-site lanes: hung operations fill their own site's lane; a slow site stops being awaited."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from cleo_operator.data.errors import SiteUnavailable
from cleo_operator.reconcile.site_lanes import MIN_LANE_WIDTH, SiteLanes

SOON = 5.0  # what "at once" may take on a busy machine


@pytest.fixture
def lanes() -> Iterator[SiteLanes]:
    made = SiteLanes(wait_seconds=1.0)
    yield made
    made.close()


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # let hung calls end, so no thread outlives the test


def test_a_full_lane_queues_its_site_but_not_another(
    lanes: SiteLanes, release: threading.Event
) -> None:
    started: list[str] = []

    def hang(name: str) -> str:
        started.append(name)
        release.wait(SOON)
        return name

    held = [lanes.submit("dead", 1, lambda i=i: hang(f"dead-{i}")) for i in range(MIN_LANE_WIDTH)]
    queued = lanes.submit("dead", 1, lambda: hang("dead-queued"))
    other = lanes.submit("alive", 1, lambda: "alive")

    # The other site answers at once although the dead site's lane is full...
    assert other.result(timeout=SOON) == "alive"
    # ...while the dead site's next operation waits for a thread of its own lane.
    time.sleep(0.1)
    assert not queued.running()
    assert not queued.done()
    assert "dead-queued" not in started
    release.set()
    assert queued.result(timeout=SOON) == "dead-queued"
    assert sorted(f.result(timeout=SOON) for f in held) == ["dead-0", "dead-1"]


def test_a_lane_is_as_wide_as_its_site_allows(lanes: SiteLanes, release: threading.Event) -> None:
    running = threading.Semaphore(0)

    def hold() -> None:
        running.release()
        release.wait(SOON)

    for _ in range(4):
        lanes.submit("wide", 4, hold)
    assert all(running.acquire(timeout=SOON) for _ in range(4))  # four at once


def test_a_slow_site_is_waited_for_a_moment_until_it_answers(
    lanes: SiteLanes, release: threading.Event
) -> None:
    hung = lanes.submit("dead", 2, lambda: release.wait(SOON))
    assert not lanes.wait("dead", hung, time.monotonic() + 0.2)
    assert lanes.is_slow("dead")

    started = time.monotonic()
    assert not lanes.wait("dead", hung, time.monotonic() + 30.0)
    assert time.monotonic() - started < 1.0  # not the 30 s budget
    assert not lanes.is_slow("alive")  # only the site that did not answer

    lanes.answered("dead")
    assert not lanes.is_slow("dead")
    release.set()
    assert lanes.wait("dead", hung, time.monotonic() + SOON)


def test_closed_lanes_refuse_work_and_drop_what_was_queued(release: threading.Event) -> None:
    lanes = SiteLanes(wait_seconds=1.0)
    for _ in range(MIN_LANE_WIDTH):
        lanes.submit("eu", 1, lambda: release.wait(SOON))
    queued = lanes.submit("eu", 1, lambda: "never")
    lanes.close()
    assert queued.cancelled()
    with pytest.raises(SiteUnavailable, match="shutting down") as raised:
        lanes.submit("eu", 1, lambda: "late")
    assert raised.value.site == "eu"


def test_a_graceful_stop_waits_for_running_operations_but_only_so_long(
    release: threading.Event,
) -> None:
    """The leader gives its lease up only once no database operation of it runs (cli/run.py
    `hand_over`): `ended` says whether they did within the time given."""
    lanes = SiteLanes(wait_seconds=1.0)
    running = lanes.submit("eu", 1, lambda: release.wait(SOON))
    lanes.submit("us", 1, lambda: "done").result(SOON)
    lanes.close()
    started = time.monotonic()
    assert not lanes.ended(0.3), "an operation still runs"
    assert time.monotonic() - started < SOON
    release.set()
    assert lanes.ended(SOON)
    assert running.done()

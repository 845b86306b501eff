"""Activity publishing against a clock that runs at real speed from just before
a minute boundary: one point per minute with work in flight, stamped with the
start of the minute it describes, and nothing for an idle minute."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Callable

from activator.activity import Activity

from .fakes import StubCloudWatch, fast_settings, run
from .test_proxy import wait_for

ID = "i-0123456789abcdef0"
NOON = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc).timestamp()


def clock_from(start: float) -> Callable[[], float]:
    began = time.monotonic()
    return lambda: start + time.monotonic() - began


def points(cloudwatch: StubCloudWatch) -> list[tuple[str, float]]:
    return [(c["MetricData"][0]["Timestamp"].strftime("%H:%M:%S"), c["MetricData"][0]["Value"])
            for c in cloudwatch.calls]


@asynccontextmanager
async def running(cloudwatch: StubCloudWatch, start: float) -> AsyncIterator[Activity]:
    """An Activity publishing loop whose clock starts at `start`, stopped on exit."""
    activity = Activity(cloudwatch, fast_settings("http://127.0.0.1:9", (ID,)), clock=clock_from(start))
    task = asyncio.get_running_loop().create_task(activity.run())
    try:
        yield activity
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class SlowCloudWatch(StubCloudWatch):
    """A PutMetricData that takes half a second: long enough to cross a minute boundary."""

    def put_metric_data(self, **kwargs: Any) -> dict[str, Any]:
        time.sleep(0.5)
        return super().put_metric_data(**kwargs)


def test_each_minute_with_work_is_published_once_stamped_with_its_minute() -> None:
    cloudwatch = StubCloudWatch()

    async def scenario() -> tuple[list[tuple[str, float]], list[tuple[str, float]], list[tuple[str, float]]]:
        async with running(cloudwatch, NOON + 60 - 0.4) as activity:  # 12:00:59.6
            activity.begin()
            activity.begin()
            assert await wait_for(lambda: len(cloudwatch.calls) == 1)
            activity.begin()  # more work in the same minute: no second point
            await asyncio.sleep(0.1)
            first_minute = points(cloudwatch)
            # Still in flight when 12:01 begins: that minute gets its own point.
            assert await wait_for(lambda: len(cloudwatch.calls) == 2)
            for _ in range(3):
                activity.end()
            both = points(cloudwatch)
            await asyncio.sleep(0.3)
        return first_minute, both, points(cloudwatch)

    first_minute, both, after_idle = run(scenario())
    assert first_minute == [("12:00:00", 2.0)]
    assert both == [("12:00:00", 2.0), ("12:01:00", 3.0)]
    assert after_idle == both  # nothing in flight: nothing published


def test_a_point_published_late_keeps_the_minute_it_describes() -> None:
    cloudwatch = SlowCloudWatch()

    async def scenario() -> list[tuple[str, float]]:
        async with running(cloudwatch, NOON + 60 - 0.2) as activity:
            activity.begin()
            activity.end()  # a request of a moment, at 12:00:59.8
            assert await wait_for(lambda: len(cloudwatch.calls) == 1)
            await asyncio.sleep(0.2)
        return points(cloudwatch)

    assert run(scenario()) == [("12:00:00", 1.0)]


def test_a_failing_publish_is_logged_and_the_next_minute_still_publishes() -> None:
    lock = threading.Lock()
    outcomes = iter([True, False])

    class FlakyCloudWatch(StubCloudWatch):
        def put_metric_data(self, **kwargs: Any) -> dict[str, Any]:
            with lock:
                self.fail = next(outcomes, False)
            return super().put_metric_data(**kwargs)

    cloudwatch = FlakyCloudWatch()

    async def scenario() -> tuple[list[tuple[int, int]], list[tuple[str, float]]]:
        async with running(cloudwatch, NOON + 60 - 0.3) as activity:
            activity.begin()
            assert await wait_for(lambda: len(cloudwatch.calls) == 1)
            activity.end()
        return list(activity.published), points(cloudwatch)

    published, sent = run(scenario())
    assert sent == [("12:01:00", 1.0)]
    assert published == [(int(NOON + 60), 1)]


def test_work_that_begins_during_a_publish_is_not_lost() -> None:
    cloudwatch = SlowCloudWatch()

    async def scenario() -> list[tuple[str, float]]:
        async with running(cloudwatch, NOON + 60 - 0.2) as activity:
            activity.begin()
            activity.end()              # 12:00:59.8: the publish for 12:00 takes 0.5 s
            await asyncio.sleep(0.3)
            activity.begin()
            activity.end()              # 12:01:00.1, while 12:00 is still being published
            assert await wait_for(lambda: len(cloudwatch.calls) == 2)
        return points(cloudwatch)

    assert run(scenario()) == [("12:00:00", 1.0), ("12:01:00", 1.0)]

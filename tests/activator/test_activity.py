"""Activity publishing, stepped by hand: each publish is followed by a sleep of
the full period, so at most one per period; idle periods publish nothing."""

from __future__ import annotations

import asyncio

from activator.activity import Activity

from .fakes import StubCloudWatch, fast_settings, run

ID = "i-0123456789abcdef0"


class Steps:
    """A sleep the test releases one period at a time."""

    def __init__(self) -> None:
        self.sleeping: asyncio.Queue[tuple[float, asyncio.Future[None]]] = asyncio.Queue()

    async def sleep(self, seconds: float) -> None:
        done = asyncio.get_running_loop().create_future()
        await self.sleeping.put((seconds, done))
        await done


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_the_peak_of_each_busy_period_is_published_once() -> None:
    cloudwatch = StubCloudWatch()

    async def scenario() -> tuple[list[float], list[float], bool]:
        steps = Steps()
        activity = Activity(cloudwatch, fast_settings("http://127.0.0.1:9", (ID,)), sleep=steps.sleep)
        loop_task = asyncio.get_running_loop().create_task(activity.run())
        periods = []
        activity.begin()
        activity.begin()
        period, release = await asyncio.wait_for(steps.sleeping.get(), 5)  # published 2 at once
        periods.append(period)
        for _ in range(3):  # more requests come and go within the period: no extra publish
            activity.begin()
            await settle()
        for _ in range(5):
            activity.end()
        release.set_result(None)
        period, release = await asyncio.wait_for(steps.sleeping.get(), 5)  # published that period's 5
        periods.append(period)
        release.set_result(None)
        await settle()
        idle = steps.sleeping.empty()  # nothing in flight: waiting, not publishing
        activity.begin()
        period, release = await asyncio.wait_for(steps.sleeping.get(), 5)
        periods.append(period)
        loop_task.cancel()
        await asyncio.gather(loop_task, return_exceptions=True)
        return [c["MetricData"][0]["Value"] for c in cloudwatch.calls], periods, idle

    values, periods, idle = run(scenario())
    assert values == [2.0, 5.0, 1.0]
    assert periods == [60.0, 60.0, 60.0]
    assert idle

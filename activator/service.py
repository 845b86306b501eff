"""Wiring: the HTTP server, the backend session, the wakers, the hold, activity
publishing and the pod watch, started and stopped together. `__main__` runs one
with real clients; tests run one in-process with moto or stub clients."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Optional

from aiohttp import web

from activator.activity import Activity
from activator.hold import Hold
from activator.podwatch import PodWatch
from activator.proxy import Proxy, backend_session, build_app, probe
from activator.settings import Settings
from activator.waker import Wakers

log = logging.getLogger("activator")


class Activator:
    def __init__(self, settings: Settings, ec2: Any, cloudwatch: Any, core_api: Any = None) -> None:
        self.settings = settings
        self.wakers = Wakers(ec2, settings)
        self.activity = Activity(cloudwatch, settings)
        self._core_api = core_api
        self.podwatch: Optional[PodWatch] = None
        self.hold: Optional[Hold] = None
        self._runner: Optional[web.AppRunner] = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> str:
        """Listen and start the background loops; the URL it listens on."""
        s = self.settings
        self._session = backend_session(s)
        self.hold = Hold(s, self.wakers[s.proxy_instance_id], functools.partial(probe, self._session, s))
        proxy = Proxy(s, self._session, self.hold, self.activity)
        self._runner = web.AppRunner(build_app(proxy), access_log=None, handle_signals=False,
                                     shutdown_timeout=s.shutdown_seconds)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            await self._session.close()
            raise
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.activity.run()))
        if self._core_api is not None:
            self.podwatch = PodWatch(self._core_api, self.wakers, s)
            self._tasks.append(loop.create_task(self.podwatch.run()))
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        """Stop accepting, answer held requests, give streams `shutdown_seconds`."""
        if self.hold is not None:
            self.hold.close()
        if self._runner is not None:
            await self._runner.cleanup()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._session.close()

"""Wiring: the HTTP server, the backend session, the wakers, the hold, what
Ollama's state is, activity publishing and the pod watch, started and stopped
together. `__main__` runs one with real clients; tests run one in-process with
moto or stub clients."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Optional

from aiohttp import web

from activator import control
from activator.activity import Activity
from activator.awake import Awake
from activator.hold import Hold
from activator.metrics import Metrics
from activator.podwatch import PodWatch
from activator.present import Presence
from activator.proxy import Proxy, backend_session, build_app, list_models, probe
from activator.settings import Settings
from activator.supervisor import Supervisor
from activator.waker import Wakers

log = logging.getLogger("activator")


class Activator:
    def __init__(self, settings: Settings, ec2: Any, cloudwatch: Any, core_api: Any = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.supervisor = Supervisor()
        self.activity = Activity(cloudwatch, settings)
        self.wakers = Wakers(ec2, settings, metrics=self.metrics, on_started=self._started)
        self._core_api = core_api
        self.podwatch: Optional[PodWatch] = None
        self.hold: Optional[Hold] = None
        self.awake: Optional[Awake] = None
        self._runner: Optional[web.AppRunner] = None
        self._tasks: list[asyncio.Task[None]] = []

    def _started(self, instance_id: str) -> None:
        """A worker just started: its Ollama is not up yet."""
        if instance_id == self.settings.proxy_instance_id and self.awake is not None:
            self.awake.lost(f"worker {instance_id} was just started")

    async def start(self) -> str:
        """Listen and start the background loops; the URL it listens on."""
        s = self.settings
        self._session = backend_session(s)
        self.awake = Awake(functools.partial(probe, self._session, s), s.liveness_seconds)
        waker = self.wakers[s.proxy_instance_id]
        presence = Presence(s.models, functools.partial(list_models, self._session, s), s.poll_seconds,
                            asyncio.get_running_loop().time)
        self.hold = Hold(s, waker, self.awake.check, metrics=self.metrics, presence=presence)
        self.metrics.track(lambda: self.activity.in_flight, lambda: self.hold.held if self.hold else 0)
        proxy = Proxy(s, self._session, self.hold, self.activity, self.awake, self.metrics)
        own = control.routes(s, waker, self.awake, self.activity, self.metrics, self.supervisor)
        # handler_cancellation: a client that hangs up ends its request (and its work) at once.
        self._runner = web.AppRunner(build_app(proxy, own), access_log=None, handle_signals=False,
                                     shutdown_timeout=s.shutdown_seconds, handler_cancellation=True)
        await self._runner.setup()
        await self.awake.check()  # serve knowing whether Ollama answers
        site = web.TCPSite(self._runner, s.host, s.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            await self._session.close()
            raise
        loop = asyncio.get_running_loop()
        keep = self.supervisor.keep
        self._tasks.append(loop.create_task(keep("activity publishing", self.activity.run)))
        self._tasks.append(loop.create_task(keep("Ollama liveness probe", self.awake.run)))
        if self._core_api is not None:
            self.podwatch = PodWatch(self._core_api, self.wakers, s)
            self._tasks.append(loop.create_task(keep("pod watch", self.podwatch.run)))
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

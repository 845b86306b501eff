"""The HTTP side: `GET /healthz`, and everything else proxied to Ollama.

A request is read fully first (Ollama's bodies are small JSON) so it can be
replayed after a hold; a body larger than `buffer_bytes` (a blob upload) is
streamed instead, once the backend answers. When the backend does not answer
(refused, timed out, reset, or a 502/503/504 from something in between while
`/api/version` does not answer either) the request is held (see `hold.py`) and
replayed when Ollama is up. Answers pass through chunk by chunk as they arrive
(NDJSON and SSE streams included); the only timeout towards the backend is the
connect timeout, because a generation may run for many minutes.

Headers pass through minus the hop-by-hop ones; `Host` becomes the backend's
(as nginx's default `proxy_pass` does) and `X-Forwarded-For/-Proto/-Host` are
added. A request that arrives while the backend answers costs no AWS call.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Optional

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from activator.activity import Activity
from activator.hold import Hold, Verdict
from activator.settings import Settings

log = logging.getLogger("activator.proxy")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
})
GATEWAY_STATUSES = frozenset({502, 503, 504})
BACKEND_DOWN = (aiohttp.ClientConnectionError, asyncio.TimeoutError)
AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


def backend_session(settings: Settings) -> aiohttp.ClientSession:
    """No total or read timeout (streams last minutes), no pool limit (held
    requests replay together), no decompression (bytes pass through unchanged)."""
    timeout = aiohttp.ClientTimeout(total=None, connect=settings.connect_timeout,
                                    sock_connect=settings.connect_timeout, sock_read=None)
    return aiohttp.ClientSession(timeout=timeout, auto_decompress=False,
                                 connector=aiohttp.TCPConnector(limit=0))


async def probe(session: aiohttp.ClientSession, settings: Settings) -> bool:
    """Whether Ollama answers `GET /api/version` now."""
    limit = aiohttp.ClientTimeout(total=settings.connect_timeout + settings.poll_seconds)
    try:
        async with session.get(settings.backend + "/api/version", timeout=limit) as reply:
            await reply.read()
            return reply.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False


def _dropped(headers: CIMultiDictProxy[str]) -> set[str]:
    """Hop-by-hop names, including those the Connection header lists."""
    listed = {token.strip().lower() for value in headers.getall("Connection", [])
              for token in value.split(",") if token.strip()}
    return HOP_BY_HOP | listed


def request_headers(request: web.Request) -> CIMultiDict[str]:
    # The body was read already (Expect), aiohttp sets the length and the Host.
    dropped = _dropped(request.headers) | {"host", "content-length", "expect"}
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in dropped)
    forwarded = request.headers.get("X-Forwarded-For")
    remote = request.remote or ""
    headers["X-Forwarded-For"] = f"{forwarded}, {remote}" if forwarded else remote
    headers.setdefault("X-Forwarded-Proto", request.scheme)
    if request.host:
        headers.setdefault("X-Forwarded-Host", request.host)
    return headers


async def read_body(request: web.Request, limit: int) -> tuple[bytes, bool]:
    """(what was read, whether that is the whole body): reading stops past `limit`."""
    if not request.body_exists:
        return b"", True
    chunks, size = [], 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks), False


async def _rest_of(prefix: bytes, content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    yield prefix
    async for chunk in content.iter_any():
        yield chunk


def unavailable(verdict: Verdict) -> web.Response:
    return web.Response(status=503, text=verdict.reason + "\n",
                        headers={"Retry-After": str(verdict.retry_after)})


class Proxy:
    def __init__(self, settings: Settings, session: aiohttp.ClientSession, hold: Hold,
                 activity: Activity) -> None:
        self._settings = settings
        self._session = session
        self._hold = hold
        self._activity = activity

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and request.path == "/healthz":
            return web.Response(text="ok\n")
        loop = asyncio.get_running_loop()
        began = loop.time()
        self._activity.begin()
        response: Optional[web.StreamResponse] = None
        try:
            response = await self._proxy(request)
            return response
        finally:
            self._activity.end()
            status = response.status if response is not None else 0
            log.info("%s %s -> %d in %.3fs", request.method, request.path, status, loop.time() - began)

    def _target(self, request: web.Request) -> URL:
        return URL(self._settings.backend + request.raw_path, encoded=True)

    async def _send(self, request: web.Request, data: object) -> aiohttp.ClientResponse:
        skip = [name for name in AUTO_HEADERS if name not in request.headers]
        return await self._session.request(
            request.method, self._target(request), headers=request_headers(request),
            data=data, allow_redirects=False, skip_auto_headers=skip)

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        body, whole = await read_body(request, self._settings.buffer_bytes)
        if not whole:
            return await self._proxy_stream(request, body)
        deadline: Optional[float] = None
        replays = 0
        while True:
            try:
                upstream = await self._send(request, body or None)
            except BACKEND_DOWN as err:
                failure = f"{type(err).__name__}: {err}"
            else:
                if upstream.status not in GATEWAY_STATUSES or await self._up():
                    return await self._relay(request, upstream)
                failure = f"the backend's path answered {upstream.status}"
                upstream.release()
            if deadline is None:
                deadline = self._hold.deadline()
                log.info("holding %s %s: %s", request.method, request.path, " ".join(failure.split()))
            elif replays:
                # Ready, yet this request failed again: never spin faster than the poll.
                await asyncio.sleep(self._settings.poll_seconds)
            verdict = await self._hold.wait(deadline)
            if not verdict.ready:
                return unavailable(verdict)
            replays += 1

    async def _proxy_stream(self, request: web.Request, prefix: bytes) -> web.StreamResponse:
        """A body too large to keep cannot be replayed: hold before sending it, send once."""
        if not await self._up():
            verdict = await self._hold.wait(self._hold.deadline())
            if not verdict.ready:
                return unavailable(verdict)
        try:
            upstream = await self._send(request, _rest_of(prefix, request.content))
        except BACKEND_DOWN as err:
            return web.Response(status=502, text=f"backend failed during a streamed upload: "
                                                 f"{type(err).__name__}\n")
        return await self._relay(request, upstream)

    async def _up(self) -> bool:
        return await probe(self._session, self._settings)

    async def _relay(self, request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        """Pass the answer through as it arrives; drop the backend if the client leaves."""
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        dropped = _dropped(upstream.headers)
        for name, value in upstream.headers.items():
            if name.lower() not in dropped:
                response.headers.add(name, value)
        done = False
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            done = True
        except ConnectionResetError:
            log.info("%s %s: client left mid-answer; backend request closed", request.method, request.path)
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            log.warning("%s %s: backend broke the answer (%s); closing the client connection",
                        request.method, request.path, type(err).__name__)
            if request.transport is not None:
                request.transport.close()
        finally:
            if done:
                upstream.release()
            else:
                upstream.close()
        return response


def build_app(proxy: Proxy) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    return app

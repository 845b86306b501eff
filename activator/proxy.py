"""Ollama's API through the activator: reads answered without waking the GPU,
work held while the worker starts, answers passed through as they arrive.

Reads (reads.py) go to Ollama while it is awake and are answered by the
activator while it sleeps; they never wake a worker and are never work.

Everything else is work. A request is read fully first (Ollama's bodies are
small JSON) so it can be replayed after a hold; a body larger than
`buffer_bytes` (a blob upload) is streamed instead, once Ollama answers. Work is
held (hold.py) and replayed only if it never reached Ollama: a request with a
body is sent with `Expect: 100-continue`, and Ollama (Go's net/http) asks for
the body only when its handler reads it, so a failure before the body went out
(refused, connect timeout, a stale pooled connection) is safe to replay, and
one after it is answered 502 and never sent again. `on_request_chunk_sent`,
aiohttp's tracing hook for body bytes written, is what tells the two apart. A
502/503/504 while `/api/version` does not answer either is a gateway answering
for an Ollama that is down: held and replayed too.

Limits: Ollama's first byte may take `first_byte_seconds` (a model load plus a
whole `stream: false` generation), after which an answer that sends nothing for
`stream_idle_seconds` is ended; either way it stops counting as work. A client
that hangs up ends its request at once (the server cancels the handler, which
closes the request to Ollama).

Headers pass through minus the hop-by-hop ones; `Host` becomes the backend's
(as nginx's default `proxy_pass` does) and `X-Forwarded-For/-Proto/-Host` are
added. A request that arrives while Ollama answers costs no AWS call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace
from typing import Any, AsyncIterator, Optional, Union

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from activator import reads
from activator.activity import Activity
from activator.awake import Awake
from activator.hold import Hold, Verdict
from activator.metrics import Metrics
from activator.present import requested_model
from activator.settings import Settings

log = logging.getLogger("activator.proxy")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
})
GATEWAY_STATUSES = frozenset({502, 503, 504})
BACKEND_DOWN = (aiohttp.ClientConnectionError, asyncio.TimeoutError)
AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
QUICK_RETRIES = 2
"""Attempts replayed at once when Ollama still answers a probe after a failure
that never reached it (a stale connection), before the request is held."""


async def _on_chunk_sent(session: aiohttp.ClientSession, context: SimpleNamespace, params: Any) -> None:
    context.trace_request_ctx.reached()


async def _on_headers_sent(session: aiohttp.ClientSession, context: SimpleNamespace, params: Any) -> None:
    if context.trace_request_ctx.bodiless:
        context.trace_request_ctx.reached()


def backend_session(settings: Settings) -> aiohttp.ClientSession:
    """No total or read timeout here (the proxy bounds each wait itself), no pool
    limit (held requests replay together), no decompression (bytes pass through
    unchanged), and the tracing that says whether a request reached Ollama."""
    timeout = aiohttp.ClientTimeout(total=None, connect=settings.connect_timeout,
                                    sock_connect=settings.connect_timeout, sock_read=None)
    tracing = aiohttp.TraceConfig()
    tracing.on_request_chunk_sent.append(_on_chunk_sent)
    tracing.on_request_headers_sent.append(_on_headers_sent)
    return aiohttp.ClientSession(timeout=timeout, auto_decompress=False, trace_configs=[tracing],
                                 connector=aiohttp.TCPConnector(limit=0))


async def _glance(session: aiohttp.ClientSession, settings: Settings, path: str) -> Optional[bytes]:
    """The uncompressed body of a quick `GET path` that Ollama answers with 200
    now, or None: bounded by the connect timeout plus a poll."""
    limit = aiohttp.ClientTimeout(total=settings.connect_timeout + settings.poll_seconds)
    try:
        async with session.get(settings.backend + path, timeout=limit, headers={"Accept-Encoding": "identity"},
                               trace_request_ctx=Sending(None, bodiless=True)) as reply:
            body = await reply.read()
            return body if reply.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None


async def probe(session: aiohttp.ClientSession, settings: Settings) -> bool:
    """Whether Ollama answers `GET /api/version` now."""
    return await _glance(session, settings, "/api/version") is not None


async def list_models(session: aiohttp.ClientSession, settings: Settings) -> Optional[set[str]]:
    """The models `GET /api/tags` lists now (by name and model), or None when it does not answer."""
    body = await _glance(session, settings, "/api/tags")
    try:
        listing = json.loads(body) if body is not None else None
    except ValueError:
        return None
    models = listing.get("models") if isinstance(listing, dict) else None
    return {reads.full_name(m[key]) for m in models or [] if isinstance(m, dict)
            for key in ("name", "model") if isinstance(m.get(key), str) and m[key]}


class Sending:
    """One attempt's tracing context: whether Ollama got the request, and the
    work count that starts the moment it did."""

    def __init__(self, activity: Optional[Activity], bodiless: bool) -> None:
        self._activity = activity
        self.bodiless = bodiless
        self.sent = False

    def reached(self) -> None:
        if not self.sent:
            self.sent = True
            if self._activity is not None:
                self._activity.begin()

    def done(self) -> None:
        if self.sent and self._activity is not None:
            self._activity.end()
            self._activity = None


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


async def read_up_to(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to `limit` bytes: all of it when it is shorter (a single read
    returns only what has arrived so far)."""
    kept = bytearray()
    while len(kept) < limit:
        chunk = await content.read(limit - len(kept))
        if not chunk:
            break
        kept += chunk
    return bytes(kept)


async def _rest_of(prefix: bytes, content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    yield prefix
    async for chunk in content.iter_any():
        yield chunk


def unavailable(verdict: Verdict) -> web.Response:
    return web.Response(status=503, text=verdict.reason + "\n",
                        headers={"Retry-After": str(verdict.retry_after)})


def _copy_headers(upstream: aiohttp.ClientResponse, response: web.StreamResponse) -> None:
    dropped = _dropped(upstream.headers)
    for name, value in upstream.headers.items():
        if name.lower() not in dropped:
            response.headers.add(name, value)


class Proxy:
    def __init__(self, settings: Settings, session: aiohttp.ClientSession, hold: Hold,
                 activity: Activity, awake: Awake, metrics: Metrics) -> None:
        self._settings = settings
        self._session = session
        self._hold = hold
        self._activity = activity
        self._awake = awake
        self._metrics = metrics
        self._cache = reads.ReadCache(settings.cache_entries, settings.cache_body_bytes)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        began = loop.time()
        response: Optional[web.StreamResponse] = None
        try:
            body, whole = await read_body(request, self._settings.buffer_bytes)
            if reads.is_read(request.method, request.path) and whole:
                response = await self._read(request, body)
            elif whole:
                response = await self._work(request, body)
            else:
                response = await self._work_streamed(request, body)
            return response
        finally:
            status = response.status if response is not None else 0
            log.info("%s %s -> %d in %.3fs", request.method, request.path, status, loop.time() - began)

    def _target(self, request: web.Request) -> URL:
        return URL(self._settings.backend + request.raw_path, encoded=True)

    async def _send(self, request: web.Request, data: object, sending: Sending,
                    headers: Optional[CIMultiDict[str]] = None,
                    timeout: Optional[aiohttp.ClientTimeout] = None) -> aiohttp.ClientResponse:
        skip = [name for name in AUTO_HEADERS if name not in request.headers]
        extra = {"timeout": timeout} if timeout is not None else {}
        return await self._session.request(
            request.method, self._target(request), headers=headers or request_headers(request),
            data=data, allow_redirects=False, skip_auto_headers=skip,
            expect100=not sending.bodiless, trace_request_ctx=sending, **extra)

    # Reads -----------------------------------------------------------------

    async def _read(self, request: web.Request, body: bytes) -> web.StreamResponse:
        key = reads.cache_key(request.method, request.path, request.query_string, body)
        if self._awake.awake:
            answer = await self._read_from_ollama(request, body, key)
            if answer is not None:
                return answer
        return self._answer_asleep(request, key)

    async def _read_from_ollama(self, request: web.Request, body: bytes,
                                key: Optional[tuple[str, ...]]) -> Optional[web.StreamResponse]:
        headers = request_headers(request)
        headers["Accept-Encoding"] = "identity"
        sending = Sending(None, bodiless=True)
        upstream: Optional[aiohttp.ClientResponse] = None
        try:
            async with asyncio.timeout(self._settings.read_timeout):
                upstream = await self._send(request, body or None, sending, headers)
                if upstream.status in GATEWAY_STATUSES and not await self._awake.check():
                    upstream.release()
                    return None
                self._awake.answered()
                kept = await read_up_to(upstream.content, self._cache.body_bytes + 1)
        except (aiohttp.ClientError, asyncio.TimeoutError):  # refused, timed out, or broken mid-answer
            if upstream is not None:
                upstream.close()
            await self._awake.check()
            return None
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        _copy_headers(upstream, response)
        if len(kept) <= self._cache.body_bytes and "Content-Encoding" not in upstream.headers:
            self._cache.put(key, reads.Answer(upstream.status, kept,
                                              upstream.headers.get("Content-Type", reads.JSON)))
        return await self._relay(request, upstream, response, prefix=kept, timed=False)

    def _answer_asleep(self, request: web.Request, key: Optional[tuple[str, ...]]) -> web.Response:
        answer = self._cache.get(key)
        source = "cache"
        headers: dict[str, str] = {}
        if answer is None:
            answer, source = reads.known(request.method, request.path, self._settings), "known"
        if answer is None:
            (answer, headers), source = reads.unknown(request.path, self._settings.retry_after_seconds), "none"
        self._metrics.answered_while_asleep.labels(source).inc()
        headers["X-Hybrid-LLM-Answer"] = f"activator ({source}; worker asleep)"
        # aiohttp sends no body for HEAD, and keeps the GET's Content-Length.
        return web.Response(status=answer.status, headers={**headers, "Content-Type": answer.content_type},
                            body=answer.body)

    # Work ------------------------------------------------------------------

    async def _work(self, request: web.Request, body: bytes) -> web.StreamResponse:
        deadline: Optional[float] = None
        quick = 0
        released = False
        while True:
            if self._awake.awake:  # known asleep: straight to the hold, no attempt first
                outcome = await self._attempt(request, body)
                if not isinstance(outcome, str):
                    return outcome
                failure = outcome
                if quick < QUICK_RETRIES and await self._awake.check():
                    quick += 1
                    continue
            else:
                failure = "Ollama is asleep"
            if deadline is None:
                deadline = self._hold.deadline()
                log.info("holding %s %s: %s", request.method, request.path, " ".join(failure.split()))
            elif released:
                # Released, yet this request failed again: never spin faster than the poll.
                await asyncio.sleep(self._settings.poll_seconds)
            verdict = await self._hold.wait(deadline, model=requested_model(body))
            if not verdict.ready:
                return unavailable(verdict)
            released, quick = True, 0

    async def _attempt(self, request: web.Request, body: bytes) -> Union[web.StreamResponse, str]:
        """One try: Ollama's answer relayed, or why it never reached Ollama."""
        sending = Sending(self._activity, bodiless=not body)
        first_byte_by = asyncio.get_running_loop().time() + self._settings.first_byte_seconds
        try:
            try:
                upstream = await asyncio.wait_for(self._send(request, body or None, sending),
                                                  self._settings.first_byte_seconds)
            except BACKEND_DOWN as err:
                if not sending.sent:
                    return f"{type(err).__name__}: {err}"
                return self._broken_after_sending(request, err)
            if upstream.status in GATEWAY_STATUSES and not await self._awake.check():
                # Something in front of Ollama answered for it while Ollama is down.
                upstream.release()
                return f"the backend's path answered {upstream.status}"
            self._awake.answered()
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            _copy_headers(upstream, response)
            return await self._relay(request, upstream, response, first_byte_by=first_byte_by)
        finally:
            sending.done()

    def _broken_after_sending(self, request: web.Request, err: BaseException) -> web.Response:
        if isinstance(err, asyncio.TimeoutError) and not isinstance(err, aiohttp.ClientConnectionError):
            self._metrics.streams_ended.labels("first_byte").inc()
            log.warning("%s %s: Ollama sent nothing for %gs; ended (ACTIVATOR_FIRST_BYTE_SECONDS)",
                        request.method, request.path, self._settings.first_byte_seconds)
            return web.Response(status=504, text=f"Ollama sent nothing for {self._settings.first_byte_seconds:g}s; "
                                                 f"the request was ended and is not sent again\n")
        log.warning("%s %s: the connection to Ollama broke after it received the request (%s); "
                    "not sent again", request.method, request.path, type(err).__name__)
        return web.Response(status=502, text=f"Ollama received the request, then the connection broke "
                                             f"({type(err).__name__}); it is not sent again\n")

    async def _work_streamed(self, request: web.Request, prefix: bytes) -> web.StreamResponse:
        """A body too large to keep cannot be replayed: hold before sending it, send once."""
        if not await self._awake.check():
            verdict = await self._hold.wait(self._hold.deadline())
            if not verdict.ready:
                return unavailable(verdict)
        sending = Sending(self._activity, bodiless=False)
        try:
            s = self._settings
            # The read timer starts once the upload is sent, so a long upload is never cut.
            after_upload = aiohttp.ClientTimeout(total=None, connect=s.connect_timeout,
                                                 sock_connect=s.connect_timeout, sock_read=s.first_byte_seconds)
            try:
                upstream = await self._send(request, _rest_of(prefix, request.content), sending,
                                            timeout=after_upload)
            except BACKEND_DOWN as err:
                return web.Response(status=502, text=f"backend failed during a streamed upload: "
                                                     f"{type(err).__name__}\n")
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            _copy_headers(upstream, response)
            return await self._relay(request, upstream, response)
        finally:
            sending.done()

    async def _relay(self, request: web.Request, upstream: aiohttp.ClientResponse,
                     response: web.StreamResponse, prefix: bytes = b"", timed: bool = True,
                     first_byte_by: Optional[float] = None) -> web.StreamResponse:
        """Pass the answer through as it arrives. With `timed`, the first body
        byte may take what is left of `first_byte_seconds` since the request went
        out (`first_byte_by`), and each later one `stream_idle_seconds`; an answer
        silent for longer is ended."""
        s = self._settings
        loop = asyncio.get_running_loop()
        if first_byte_by is None:
            first_byte_by = loop.time() + s.first_byte_seconds
        begun = bool(prefix)
        done = False
        try:
            await response.prepare(request)
            if prefix:
                await response.write(prefix)
            while True:
                limit = None if not timed else s.stream_idle_seconds if begun else first_byte_by - loop.time()
                try:
                    chunk = await asyncio.wait_for(upstream.content.readany(), limit)
                except asyncio.TimeoutError:
                    phase = "idle" if begun else "first_byte"
                    self._metrics.streams_ended.labels(phase).inc()
                    log.warning("%s %s: Ollama's answer went silent (%s); ended, closing the client connection",
                                request.method, request.path, "ACTIVATOR_STREAM_IDLE_SECONDS" if begun
                                else "ACTIVATOR_FIRST_BYTE_SECONDS")
                    if request.transport is not None:
                        request.transport.close()
                    break
                if not chunk:
                    await response.write_eof()
                    done = True
                    break
                begun = True
                await response.write(chunk)
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


def build_app(proxy: Proxy, own_routes: web.RouteTableDef) -> web.Application:
    app = web.Application()
    app.add_routes(own_routes)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    return app

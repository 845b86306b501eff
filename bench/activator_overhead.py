"""What the activator costs on the request path, on loopback only. Prints
figures; asserts nothing.

Three processes (spawned, so each has its own interpreter and event loop): a
stand-in Ollama (aiohttp, a ~300-byte JSON answer to POST /api/chat), the real
activator (`activator.service.Activator`, stub AWS clients that never leave the
process), and this load generator. Measured:
- latency the proxy adds: sequential requests, median and p99, direct to the
  backend vs through the activator (ratio and absolute ms);
- throughput: a fixed number of requests at fixed concurrency, direct vs proxied;
- memory per held request: the activator's RSS with N requests held (backend
  down, worker reported running so nothing is started; the cap raised to N)
  minus its RSS before, / N.
Every POST /api/chat is GPU work: sent with `Expect: 100-continue` (one more
round trip, so the proxy can tell whether Ollama read the body) and counted in
flight, as deployed.
The activator logs at INFO as in production (one line per request), to /dev/null.
The machine's core count bounds the throughput figure: with fewer cores than
processes the proxy competes with the client and the backend for CPU.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LOOPBACK = "127.0.0.1"
INSTANCE = "i-0123456789abcdef0"
SEQUENTIAL = 1500
WARMUP = 200
THROUGHPUT_REQUESTS = 4000
CONCURRENCY = 32
HELD = 1000
BODY = (b'{"model":"llama3.2:3b","messages":[{"role":"user","content":"Why is the sky blue? '
        b'Answer in one sentence."}],"stream":false,"options":{"temperature":0}}')
ANSWER = (b'{"model":"llama3.2:3b","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant",'
          b'"content":"Sunlight scatters off air molecules, and blue light scatters most."},'
          b'"done_reason":"stop","done":true,"total_duration":1000000,"eval_count":17}')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_backend(port: int) -> None:
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"version": "0.32.0"})

    app = web.Application()
    app.router.add_post("/api/chat", chat)
    app.router.add_get("/api/version", version)
    web.run_app(app, host=LOOPBACK, port=port, access_log=None, print=None)


class RunningEC2:
    """DescribeInstances says running: a hold never starts anything."""

    def describe_instances(self, InstanceIds: list[str]) -> dict[str, Any]:
        return {"Reservations": [{"Instances": [{"InstanceId": InstanceIds[0], "State": {"Name": "running"}}]}]}


class NullCloudWatch:
    def put_metric_data(self, **kwargs: Any) -> dict[str, Any]:
        return {}


def run_activator(port: int, backend: str, held: Any) -> None:
    import logging

    from activator.service import Activator
    from activator.settings import Settings

    # Log as in production (a line per request at INFO), into /dev/null.
    logging.basicConfig(stream=open(os.devnull, "w"), level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def main() -> None:
        settings = Settings(backend=backend, instance_ids=(INSTANCE,), host=LOOPBACK, port=port,
                            hold_seconds=120.0, watch_pods=False, max_held=HELD)
        activator = Activator(settings, RunningEC2(), NullCloudWatch())
        await activator.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        while not stop.is_set():
            held.value = activator.hold.held if activator.hold else 0
            try:
                await asyncio.wait_for(stop.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
        await activator.stop()

    asyncio.run(main())


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


async def wait_listening(url: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for _ in range(400):
            try:
                async with session.get(url + "/healthz") as reply:
                    await reply.read()
                    return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.025)
    raise SystemExit(f"{url} never listened")


async def latencies(url: str) -> list[float]:
    import aiohttp

    samples = []
    async with aiohttp.ClientSession() as session:
        for n in range(WARMUP + SEQUENTIAL):
            began = time.perf_counter()
            async with session.post(url + "/api/chat", data=BODY) as reply:
                await reply.read()
            if n >= WARMUP:
                samples.append(time.perf_counter() - began)
    return samples


async def throughput(url: str) -> float:
    import aiohttp

    remaining = THROUGHPUT_REQUESTS

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.post(url + "/api/chat", data=BODY) as reply:
                await reply.read()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        began = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
        return THROUGHPUT_REQUESTS / (time.perf_counter() - began)


async def hold_many(url: str, pid: int, held: Any) -> tuple[int, int, float]:
    import aiohttp

    before = rss_kib(pid)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=None)) as session:
        async def one() -> None:
            async with session.post(url + "/api/chat", data=BODY) as reply:
                await reply.read()

        tasks = [asyncio.ensure_future(one()) for _ in range(HELD)]
        began = time.perf_counter()
        while held.value < HELD and time.perf_counter() - began < 30:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        during = rss_kib(pid)
        count = held.value
        os.kill(pid, signal.SIGTERM)  # held requests get their 503 and the process exits
        await asyncio.gather(*tasks, return_exceptions=True)
    return before, during, count


def main() -> None:
    spawn = multiprocessing.get_context("spawn")
    backend_port, proxy_port, held_port = free_port(), free_port(), free_port()
    backend_url = f"http://{LOOPBACK}:{backend_port}"
    proxy_url = f"http://{LOOPBACK}:{proxy_port}"
    held_url = f"http://{LOOPBACK}:{held_port}"
    held, unused = spawn.Value("i", 0), spawn.Value("i", 0)
    processes = [spawn.Process(target=run_backend, args=(backend_port,), daemon=True),
                 spawn.Process(target=run_activator, args=(proxy_port, backend_url, unused),
                               daemon=True),
                 spawn.Process(target=run_activator, args=(held_port, f"http://{LOOPBACK}:{free_port()}", held),
                               daemon=True)]
    for process in processes:
        process.start()
    try:
        asyncio.run(measure(backend_url, proxy_url, held_url, processes[2].pid or 0, held))
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join(5)


async def measure(backend_url: str, proxy_url: str, held_url: str, held_pid: int, held: Any) -> None:
    for url in (backend_url, proxy_url, held_url):
        await wait_listening(url)
    direct = await latencies(backend_url)
    proxied = await latencies(proxy_url)
    direct_rps = await throughput(backend_url)
    proxied_rps = await throughput(proxy_url)
    before, during, count = await hold_many(held_url, held_pid, held)

    print(f"activator overhead on loopback ({os.cpu_count()} CPUs; backend, activator and client "
          f"in separate processes)")
    print(f"latency, {SEQUENTIAL} sequential POST /api/chat ({len(BODY)} B in, {len(ANSWER)} B out):")
    for name, share in (("median", 0.5), ("p99", 0.99)):
        d, p = percentile(direct, share) * 1000, percentile(proxied, share) * 1000
        print(f"  {name:6}  direct {d:7.3f} ms   proxied {p:7.3f} ms   added {p - d:+7.3f} ms   "
              f"ratio {p / d:5.2f}x")
    print(f"throughput, {THROUGHPUT_REQUESTS} requests at concurrency {CONCURRENCY}:")
    print(f"  direct {direct_rps:8.0f} req/s   proxied {proxied_rps:8.0f} req/s   "
          f"ratio {proxied_rps / direct_rps:5.2f}")
    delta = during - before
    print(f"memory, {count} requests held (of {HELD} sent): activator RSS {before / 1024:.1f} MiB -> "
          f"{during / 1024:.1f} MiB, {delta / max(count, 1):.1f} KiB per held request")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"bench time {time.perf_counter() - started:.1f} s")

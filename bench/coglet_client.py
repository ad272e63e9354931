"""``python -m bench coglet_client``: the plain POST to coglet, ``runtime/http1.py`` vs httpcore (and httpx), A/B.

Every sync prediction ends in one ``POST /predictions`` to its coglet on a kept-alive connection, over the
sandbox's unix socket (or loopback TCP without the sandbox). This measures the client's part of that call:

* ``http1``: :class:`cogport.runtime.http1.KeepAliveClient` ``post_json`` (what the runtime uses);
* ``httpcore``: ``httpcore.AsyncConnectionPool.request`` (the transport under httpx; one pool per socket);
* ``httpx``: ``httpx.AsyncClient.post`` (for scale: what the runtime used before ``http1``).

The server is a separate process (a minimal asyncio HTTP/1.1 server answering as coglet does for a
succeeded no-op prediction: JSON, ``Content-Length``, keep-alive), so the client process's CPU is the
client's. Rounds alternate the sides (rotating which goes first); each round sends ``--requests`` sequential
requests per side and notes the client's CPU (``time.process_time``) and the median latency per request.
Prints each round and the medians of the rounds. ``--only SIDE --requests N`` sends N requests with one side
and exits, for ``valgrind --tool=callgrind`` instruction counts: (Ir(N) - Ir(0)) / N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

import httpcore
import httpx

from cogport.runtime.http1 import KeepAliveClient

SERVER = r"""
import asyncio, json, sys
BODY = json.dumps({"id": "rt43a1e743c1694994ad50", "status": "succeeded", "output": "", "logs": "",
                   "metrics": {"predict_time": 0.0001}, "error": None, "input": {}}).encode()
HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " + str(len(BODY)).encode()
        + b"\r\ndate: Thu, 03 Dec 2026 05:00:00 GMT\r\n\r\n")

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            writer.write(HEAD + BODY)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main(where):
    if where.startswith("/"):
        server = await asyncio.start_unix_server(handle, where)
    else:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
    print("ready", flush=True)
    await server.serve_forever()

asyncio.run(main(sys.argv[1]))
"""

BODY = json.dumps({"id": "rt43a1e743c1694994ad50", "input": {}}).encode()
Send = Callable[[], Awaitable[int]]


class Server:
    """The stand-in coglet, in a process of its own."""

    def __init__(self, uds: str | None) -> None:
        self.uds = uds
        self.process = subprocess.Popen([sys.executable, "-c", SERVER, uds or "tcp"], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        port = 80 if uds else int(self.process.stdout.readline())
        assert self.process.stdout.readline().strip() == "ready"
        self.url = f"http://127.0.0.1:{port}/predictions"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def sides(server: Server) -> tuple[dict[str, Send], Callable[[], Awaitable[None]]]:
    """The three clients' one request each, and how to close them."""
    plain = KeepAliveClient()
    pool = httpcore.AsyncConnectionPool(uds=server.uds)
    transport = httpx.AsyncHTTPTransport(uds=server.uds) if server.uds else None
    client = httpx.AsyncClient(trust_env=False, transport=transport, timeout=httpx.Timeout(5.0, read=None))
    headers = [
        (b"Host", b"127.0.0.1"),
        (b"Content-Type", b"application/json"),
        (b"Accept", b"application/json"),
        (b"Content-Length", str(len(BODY)).encode()),
    ]

    async def http1() -> int:
        response = await plain.post_json(server.url, BODY, uds=server.uds)
        return len(response.content)

    async def core() -> int:
        response = await pool.request("POST", server.url, headers=headers, content=BODY)
        return len(response.content)

    async def via_httpx() -> int:
        response = await client.post(server.url, content=BODY, headers={"Content-Type": "application/json"})
        return len(response.content)

    async def close() -> None:
        await plain.aclose()
        await pool.aclose()
        await client.aclose()

    return {"http1": http1, "httpcore": core, "httpx": via_httpx}, close


async def block(send: Send, n: int) -> tuple[float, float]:
    """CPU microseconds per request, and the median latency in microseconds, over ``n`` requests."""
    latencies = []
    began = time.process_time()
    for _ in range(n):
        sent = time.perf_counter()
        await send()
        latencies.append(time.perf_counter() - sent)
    return (time.process_time() - began) / n * 1e6, statistics.median(latencies) * 1e6


async def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as work:
        server = Server(None if args.tcp else os.path.join(work, "coglet.sock"))
        try:
            clients, close = sides(server)
            try:
                for send in clients.values():  # warm: connections open, code paths taken
                    for _ in range(50):
                        assert await send() > 0
                if args.only:
                    for _ in range(args.requests):
                        await clients[args.only]()
                    return 0
                names = [name for name in clients if name in args.sides]
                cpu: dict[str, list[float]] = {name: [] for name in names}
                wall: dict[str, list[float]] = {name: [] for name in names}
                print(f"{'tcp' if args.tcp else 'unix socket'}; {args.rounds} rounds x {args.requests} requests")
                for round_ in range(args.rounds):
                    shift = round_ % len(names)
                    for name in names[shift:] + names[:shift]:
                        used, latency = await block(clients[name], args.requests)
                        cpu[name].append(used)
                        wall[name].append(latency)
                    print(
                        f"round {round_ + 1}: "
                        + ", ".join(f"{n} {cpu[n][-1]:.1f} us CPU / {wall[n][-1]:.1f} us" for n in names)
                    )
                print("median of rounds, client CPU per request / median latency:")
                for name in names:
                    print(
                        f"  {name:9} {statistics.median(cpu[name]):7.1f} us / {statistics.median(wall[name]):7.1f} us"
                    )
                base = names[0]
                for name in names[1:]:
                    paired = [b - a for a, b in zip(cpu[base], cpu[name], strict=True)]
                    print(f"  {name} - {base}, paired rounds: median {statistics.median(paired):+.1f} us CPU")
            finally:
                await close()
        finally:
            server.stop()
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench coglet_client", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--tcp", action="store_true", help="loopback TCP (no sandbox) instead of a unix socket")
    parser.add_argument("--sides", nargs="+", default=["http1", "httpcore", "httpx"])
    parser.add_argument("--only", choices=["http1", "httpcore", "httpx"])
    return asyncio.run(run(parser.parse_args(argv)))

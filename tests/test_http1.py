"""``runtime/http1.py``, the keep-alive client of the plain POST to coglet, against a real local server.

The server is an asyncio server on 127.0.0.1 (an ephemeral port) or on a unix socket, written here so that
each test says what comes back on the wire: bodies framed by ``Content-Length``, chunked or by the end of
the connection, a server that closes a kept connection or answers nonsense. It notes every connection it
accepts and every request it reads, which is how reuse is seen.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cogport.runtime.http1 import KeepAliveClient, TransportFailed

Answer = Callable[["Request"], "bytes | None"]
"""What the server writes for a request (None: close the connection without answering)."""


@dataclass
class Request:
    connection: int
    """Which accepted connection it came on (counted from 0)."""
    head: bytes
    body: bytes

    @property
    def target(self) -> str:
        return self.head.split(b" ", 2)[1].decode()


def answer(body: bytes, *, status: str = "200 OK", headers: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


def echo(request: Request) -> bytes:
    """The request's target, body size and connection, as JSON with ``Content-Length``."""
    body = {"target": request.target, "size": len(request.body), "connection": request.connection}
    return answer(json.dumps(body).encode(), headers="Content-Type: application/json\r\n")


@dataclass
class Server:
    respond: Answer = echo
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    closed_by_client: int = 0
    """Connections whose client went away (EOF while waiting for a request)."""
    close_after_answer: bool = False
    url: str = ""
    uds: str | None = None
    _ends: asyncio.Queue[int] = field(default_factory=asyncio.Queue)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.closed_by_client += 1
                    return
                length = next(
                    (int(line[15:]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
                    0,
                )
                request = Request(number, head, await reader.readexactly(length))
                self.requests.append(request)
                reply = self.respond(request)
                if reply is None:
                    return
                writer.write(reply)
                await writer.drain()
                if self.close_after_answer:
                    return
        finally:
            writer.close()
            self._ends.put_nowait(number)

    async def ended(self) -> int:
        """The next connection to end (closed by either side), once its handler is done."""
        return await self._ends.get()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    serving = Server()
    listening = await asyncio.start_server(serving.handle, "127.0.0.1", 0)
    serving.url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}"
    async with listening:
        yield serving


@pytest.fixture
async def client() -> AsyncIterator[KeepAliveClient]:
    kept = KeepAliveClient()
    yield kept
    await kept.aclose()


async def post(
    client: KeepAliveClient, server: Server, path: str = "/predictions", body: bytes = b"{}"
) -> dict[str, Any]:
    response = await client.post_json(server.url + path, body, uds=server.uds)
    assert response.status_code == 200, response
    result: dict[str, Any] = json.loads(response.content)
    return result


async def test_a_kept_connection_carries_the_next_requests(client: KeepAliveClient, server: Server) -> None:
    for _ in range(3):
        assert (await post(client, server))["connection"] == 0
    assert server.connections == 1

    head = server.requests[0].head.decode()
    assert head.startswith("POST /predictions HTTP/1.1\r\n")
    assert "Content-Type: application/json\r\n" in head and "Content-Length: 2\r\n" in head


async def test_concurrent_requests_take_a_connection_each_and_keep_them(
    client: KeepAliveClient, server: Server
) -> None:
    first = await asyncio.gather(*(post(client, server) for _ in range(3)))
    assert sorted(r["connection"] for r in first) == [0, 1, 2]
    again = await asyncio.gather(*(post(client, server) for _ in range(3)))
    assert sorted(r["connection"] for r in again) == [0, 1, 2]  # the same three, kept
    assert server.connections == 3


async def test_idle_connections_beyond_the_limit_are_closed(server: Server) -> None:
    client = KeepAliveClient(max_idle_per_host=1)
    try:
        await asyncio.gather(post(client, server), post(client, server))
        await server.ended()  # the second one back found the idle list full
        assert server.closed_by_client == 1
        await post(client, server)
        assert server.connections == 2
    finally:
        await client.aclose()


async def test_a_query_string_is_sent(client: KeepAliveClient, server: Server) -> None:
    assert (await post(client, server, "/predictions/abc/cancel?x=1"))["target"] == "/predictions/abc/cancel?x=1"


async def test_a_chunked_body_with_extensions_and_trailers(client: KeepAliveClient, server: Server) -> None:
    payload = b'{"status": "succeeded", "output": "' + b"x" * 5000 + b'"}'
    pieces = [payload[:7], payload[7:4000], payload[4000:]]
    chunked = b"".join(
        f"{len(p):x}{';name=value' if i == 1 else ''}\r\n".encode() + p + b"\r\n" for i, p in enumerate(pieces)
    )
    server.respond = lambda request: (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\nX-Trailer: yes\r\n\r\n"
    )
    response = await client.post_json(server.url + "/predictions", b"{}")
    assert response.content == payload
    await client.post_json(server.url + "/predictions", b"{}")
    assert server.connections == 1  # read to its end: the connection is reused


async def test_other_statuses_come_back_as_they_are(client: KeepAliveClient, server: Server) -> None:
    server.respond = lambda request: answer(b'{"detail": "busy"}', status="409 Conflict")
    response = await client.post_json(server.url + "/predictions", b"{}")
    assert (response.status_code, response.content) == (409, b'{"detail": "busy"}')
    server.respond = lambda request: answer(b"", status="204 No Content")
    response = await client.post_json(server.url + "/predictions", b"{}")
    assert (response.status_code, response.content) == (204, b"")
    assert server.connections == 1


async def test_a_body_ended_by_the_connection_closing(client: KeepAliveClient, server: Server) -> None:
    server.respond = lambda request: b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{}"
    server.close_after_answer = True
    for _ in range(2):
        response = await client.post_json(server.url + "/predictions", b"{}")
        assert (response.status_code, response.content) == (200, b"{}")
    assert server.connections == 2  # no framing: never reused


async def test_connection_close_is_honoured(client: KeepAliveClient, server: Server) -> None:
    server.respond = lambda request: answer(b"{}", headers="Connection: close\r\n")
    await post(client, server)
    await post(client, server)
    assert server.connections == 2


async def test_a_kept_connection_the_server_closed_is_replaced(client: KeepAliveClient, server: Server) -> None:
    server.close_after_answer = True  # as coglet may close a kept connection while it is idle
    await post(client, server)
    await server.ended()
    server.close_after_answer = False
    assert (await post(client, server))["connection"] == 1
    assert [r.connection for r in server.requests] == [0, 1]


async def test_a_new_connection_closed_without_an_answer_fails(client: KeepAliveClient, server: Server) -> None:
    server.respond = lambda request: None
    with pytest.raises(TransportFailed, match="IncompleteReadError"):
        await client.post_json(server.url + "/predictions", b"{}")
    assert len(server.requests) == 1  # not sent again: the model may have taken it


async def test_a_body_cut_short_fails(client: KeepAliveClient, server: Server) -> None:
    server.respond = lambda request: b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial'
    server.close_after_answer = True
    with pytest.raises(TransportFailed, match="IncompleteReadError"):
        await client.post_json(server.url + "/predictions", b"{}")


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"HTTP/1.1 OK fine\r\nContent-Length: 0\r\n\r\n", "bad status line 'HTTP/1.1 OK fine'"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "bad status line 'SSH-2.0-OpenSSH_9.6'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n", "bad Content-Length 'many'"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    ],
)
async def test_a_malformed_response_fails_clearly(
    client: KeepAliveClient, server: Server, reply: bytes, error: str
) -> None:
    server.respond = lambda request: reply
    with pytest.raises(TransportFailed, match=error):
        await client.post_json(server.url + "/predictions", b"{}")
    server.respond = echo
    assert (await post(client, server))["connection"] == 1  # the broken connection was not kept


async def test_headers_beyond_the_limit_fail_clearly(client: KeepAliveClient, server: Server) -> None:
    server.respond = lambda request: b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(TransportFailed, match="response headers too large"):
        await client.post_json(server.url + "/predictions", b"{}")


async def test_large_bodies_both_ways(client: KeepAliveClient, server: Server) -> None:
    big = json.dumps({"input": {"text": "y" * (8 << 20)}}).encode()
    assert (await post(client, server, body=big))["size"] == len(big)

    output = json.dumps({"output": "z" * (8 << 20)}).encode()
    server.respond = lambda request: answer(output)
    assert (await client.post_json(server.url + "/predictions", b"{}")).content == output
    chunks = [output[i : i + 1_000_003] for i in range(0, len(output), 1_000_003)]
    server.respond = lambda request: (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks)
        + b"0\r\n\r\n"
    )
    assert (await client.post_json(server.url + "/predictions", b"{}")).content == output
    assert server.connections == 1


async def test_a_timeout_around_the_call_drops_its_connection(client: KeepAliveClient, server: Server) -> None:
    server.respond = lambda request: b""  # writes nothing: the answer never comes
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await client.post_json(server.url + "/predictions", b"{}")
    await server.ended()  # the connection with a request in flight is closed, not kept
    assert server.closed_by_client == 1
    server.respond = echo
    assert (await post(client, server))["connection"] == 1


async def test_a_refused_connection_fails(client: KeepAliveClient) -> None:
    listening = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    listening.close()
    await listening.wait_closed()
    with pytest.raises(TransportFailed, match="ConnectionRefusedError"):
        await client.post_json(f"http://127.0.0.1:{port}/predictions", b"{}")


async def test_through_a_unix_socket(client: KeepAliveClient, tmp_path: Path) -> None:
    serving = Server()
    path = str(tmp_path / "coglet.sock")
    async with await asyncio.start_unix_server(serving.handle, path):
        serving.url, serving.uds = "http://127.0.0.1:5000", path  # the URL only names the request
        assert (await post(client, serving))["connection"] == 0
        assert (await post(client, serving))["connection"] == 0
        assert b"Host: 127.0.0.1:5000\r\n" in serving.requests[0].head


async def test_aclose_closes_the_idle_connections(server: Server) -> None:
    client = KeepAliveClient()
    await post(client, server)
    await client.aclose()
    await server.ended()
    assert server.closed_by_client == 1

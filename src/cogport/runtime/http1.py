"""A minimal HTTP/1.1 client for the one exchange on the hot path: a JSON POST to a coglet on loopback.

It costs the client about a tenth of what httpcore (the transport under httpx) does, and a twentieth of
httpx (``python -m bench coglet_client``; figures in docs/benchmarks.md, "The plain POST to coglet"). It
keeps one connection per concurrent request alive per coglet, writes the request in one ``write`` and reads
a ``Content-Length``, chunked or close-delimited response. ``tests/test_http1.py`` runs it against a real
local server. It speaks to coglet only (``http://127.0.0.1:<port>``): no TLS, no redirects, no
proxies, no cookies. Transport failures raise :class:`TransportFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 64 * 1024
STALE_WITHIN = 0.05
"""A kept connection that fails this soon was closed by the server while idle (the request is sent again
on a new one); one that fails later may have been taken by the model: that is reported, never retried."""


class TransportFailed(Exception):
    """The connection failed, closed early, or the response could not be read."""


@dataclass
class Response:
    status_code: int
    content: bytes


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


@dataclass(frozen=True)
class _Prefix:
    host: str
    port: int
    head: bytes

    @classmethod
    def of(cls, url: str) -> _Prefix:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        head = (
            f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            "Accept: application/json\r\nContent-Length: "
        ).encode("ascii")
        return cls(host, port, head)


class KeepAliveClient:
    def __init__(self, *, connect_timeout: float = 5.0, max_idle_per_host: int = 64) -> None:
        self.connect_timeout = connect_timeout
        self.max_idle_per_host = max_idle_per_host
        self._idle: dict[tuple[str, int] | str, list[_Connection]] = defaultdict(list)
        self._closed = False
        self._prefixes: dict[str, _Prefix] = {}
        """Each URL's request head up to the Content-Length value (a coglet has two URLs)."""

    async def post_json(self, url: str, body: bytes, *, uds: str | None = None) -> Response:
        """POST ``body`` (JSON) to ``url`` (through the unix socket ``uds`` when given); the response once it
        is complete (no time bound: a prediction may run long; wrap the call in ``asyncio.timeout`` for one)."""
        prefix = self._prefixes.get(url)
        if prefix is None:
            if len(self._prefixes) >= 1024:  # instances come and go, each with its own port
                self._prefixes.clear()
            prefix = self._prefixes[url] = _Prefix.of(url)
        host, port = prefix.host, prefix.port
        head = prefix.head + b"%d\r\n\r\n" % len(body)
        key: tuple[str, int] | str = uds or (host, port)
        reused = self._take(key)
        connection = reused or await self._connect(host, port, uds)
        began = time.monotonic()
        try:
            response, keep = await self._exchange(connection, head + body)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TransportFailed, ValueError) as exc:
            connection.close()
            if reused is not None and time.monotonic() - began < STALE_WITHIN:
                # A kept connection coglet had closed: the request never reached it; try once afresh.
                return await self.post_json(url, body, uds=uds)
            raise TransportFailed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
        except BaseException:
            connection.close()
            raise
        if keep and not self._closed and len(self._idle[key]) < self.max_idle_per_host:
            self._idle[key].append(connection)
        else:
            connection.close()
        return response

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _take(self, key: tuple[str, int] | str) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.reader.at_eof() and not connection.writer.is_closing():
                return connection
            connection.close()
        return None

    async def _connect(self, host: str, port: int, uds: str | None = None) -> _Connection:
        limit = MAX_HEADER_BYTES
        opening = (
            asyncio.open_unix_connection(uds, limit=limit) if uds else asyncio.open_connection(host, port, limit=limit)
        )
        try:
            reader, writer = await asyncio.wait_for(opening, self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise TransportFailed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
        return _Connection(reader, writer)

    async def _exchange(self, connection: _Connection, request: bytes) -> tuple[Response, bool]:
        connection.writer.write(request)
        await connection.writer.drain()
        reader = connection.reader
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:  # the reader's limit is MAX_HEADER_BYTES
            raise TransportFailed("response headers too large") from None
        lines = head.decode("latin-1").split("\r\n")
        try:
            _version, status, *_ = lines[0].split(" ", 2)
            status_code = int(status)
        except ValueError:
            raise TransportFailed(f"bad status line {lines[0]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            content = await _read_chunked(reader)
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                raise TransportFailed(f"bad Content-Length {length!r}")
            content = await reader.readexactly(int(length))
        else:  # no framing: the body ends with the connection
            content = await reader.read()
            return Response(status_code, content), False
        keep = headers.get("connection", "").lower() != "close"
        return Response(status_code, content), keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        except ValueError:
            raise TransportFailed(f"bad chunk size {size_line!r}") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, then the blank line
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)

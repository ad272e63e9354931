"""What crosses a sandbox's network boundary, on the host side: the egress proxy and cogport's gateway.

A sandbox has a network namespace of its own (:mod:`cogport.runtime.sandbox`); its first program relays
two loopback ports inside to two unix sockets on the host, served here, one pair per instance:

* **The egress proxy** (``HTTP_PROXY``/``HTTPS_PROXY`` inside): ``CONNECT host:port`` and absolute-form
  ``http://`` requests, each target checked against :class:`EgressPolicy` before anything is sent, and
  connected to the address that was checked (a name that resolves elsewhere later changes nothing).
  ``COGPORT_SANDBOX__EGRESS``: ``none``, ``public`` (no loopback, private, link-local or metadata
  address: the rule input URLs follow) or an allow-list.
* **A loopback storage endpoint** (a SeaweedFS beside the server), when there is one, answers inside at its
  own address too, relayed byte for byte to it and nowhere else: presigned input URLs work unchanged.
* **The gateway**: cogport's own ``internal_url`` as the model sees it. It passes two kinds of request
  and answers 403 to anything else: ``GET``/``HEAD`` of a signed input file (``/v1/files/<id>/download``,
  whose signature is the capability) and ``PUT`` of an output file to ``/internal/uploads/sandboxed/<name>``,
  which it sends on with the instance's own upload token (the model never sees it), up to
  ``COGPORT_SANDBOX__UPLOAD_MAX_MB``; and ``GET``/``HEAD`` of ``/internal/weights/<name>``, the instance's own
  trained weights (a trained version's ``COG_WEIGHTS``: a URL, as on Replicate, where
  ``requests.get(weights)`` in ``setup`` is common), served from the host's copy, with single byte ranges.
  One request per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import h11
import httpx

from cogport.files.urls import FILES_PATH, UPLOADS_PATH
from cogport.netpolicy import Address, Admitted, HostPolicy, Refusal, resolve

log = logging.getLogger(__name__)

SANDBOX_UPLOADS = f"{UPLOADS_PATH}/sandboxed/"
"""The upload URL path a sandboxed coglet is given (``--upload-url {internal}{SANDBOX_UPLOADS}``)."""
_DOWNLOAD = re.compile(rf"^{re.escape(FILES_PATH)}/[0-9a-z]{{1,32}}/download(?:/[^/?]*)?\?")
WEIGHTS_PATH = "/internal/weights/"
"""Where the gateway serves the instance's weights (``COG_WEIGHTS`` inside is ``{internal}{WEIGHTS_PATH}<name>``)."""
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_HEAD_LIMIT = 64 * 1024
_CHUNK = 1 << 16


@dataclass(frozen=True)
class EgressPolicy:
    """Which targets model code may reach through the proxy."""

    mode: str = "public"
    """``none``, ``public`` or ``allow``."""
    policy: HostPolicy | None = None
    always: frozenset[tuple[str, int]] = frozenset()
    """``(host, port)`` pairs admitted whatever the mode (the storage endpoint presigned URLs name)."""

    @classmethod
    def parse(cls, egress: str, *, always: frozenset[tuple[str, int]] = frozenset()) -> EgressPolicy:
        value = egress.strip()
        if value.lower() == "none":
            return cls("none", None, always)
        if value.lower() in ("", "public"):
            return cls("public", HostPolicy.of(False, settings_prefix="COGPORT_SANDBOX", refuse_local=True), always)
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        return cls("allow", HostPolicy.of(False, entries, settings_prefix="COGPORT_SANDBOX"), always)

    async def admit(self, scheme: str, host: str, port: int) -> Admitted | Refusal:
        url = f"{scheme}://{_bracket(host)}:{port}/"
        if (host.lower().strip("[]"), port) in self.always:
            return Admitted(url, host, tuple(await _addresses(host, port)))
        if self.policy is None:
            return Refusal("model code may not reach the network here (COGPORT_SANDBOX__EGRESS=none)")
        verdict = await self.policy.admit(url)
        if isinstance(verdict, Refusal):
            return Refusal(
                verdict.reason.replace("__ALLOWED_HOSTS", "__EGRESS").replace(
                    "COGPORT_SANDBOX__ALLOW_PRIVATE_NETWORKS=true", "an allow-list in COGPORT_SANDBOX__EGRESS"
                )
            )
        return verdict


async def _addresses(host: str, port: int) -> list[Address]:
    return list(await resolve(host.strip("[]"), port))


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass
class Gateway:
    """The egress proxy and the gateway of one instance, listening on two unix sockets in ``directory``."""

    directory: Path
    egress: EgressPolicy
    internal_base: str
    """cogport's internal URL (``http://127.0.0.1:8000``): where the gateway sends what it passes."""
    upload_url: str | None = None
    """The instance's real upload URL (with its token), or None: uploads refused."""
    upload_max_bytes: int = 1 << 30
    on_refusal: Callable[[str], object] | None = None
    """Told each refused egress target and refused upload, as a line for the instance's log."""
    storage: tuple[str, int] | None = None
    """A loopback storage endpoint (presigned input URLs): relayed as it is from a third socket."""
    weights: Path | None = None
    """The instance's trained weights (a file on this machine), served at :attr:`weights_path`."""
    _servers: list[asyncio.AbstractServer] = field(default_factory=list)
    _client: httpx.AsyncClient | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def egress_socket(self) -> Path:
        return self.directory / "egress.sock"

    @property
    def gateway_socket(self) -> Path:
        return self.directory / "gateway.sock"

    @property
    def storage_socket(self) -> Path:
        return self.directory / "storage.sock"

    @property
    def weights_path(self) -> str | None:
        """The path (on cogport's internal URL, inside) the weights are served at, their file name kept."""
        return f"{WEIGHTS_PATH}{quote(self.weights.name)}" if self.weights is not None else None

    @property
    def upload_limit(self) -> str:
        """The upload bound as people read it (``1 MiB``)."""
        limit = self.upload_max_bytes
        return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"

    def _http(self) -> httpx.AsyncClient:
        """The client to cogport, made on the gateway's first request (most instances never make one, and a
        client costs its TLS context at every cold start)."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None), trust_env=False)
        return self._client

    async def start(self) -> None:
        served = [(self.egress_socket, self._proxy), (self.gateway_socket, self._gateway)]
        if self.storage is not None:
            served.append((self.storage_socket, self._storage))
        for path, handler in served:
            server = await asyncio.start_unix_server(self._guard(handler), str(path), limit=_HEAD_LIMIT)
            os.chmod(path, 0o666)  # the sandbox's uid connects; the directory itself is cogport's alone
            self._servers.append(server)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        self._servers.clear()

    def _guard(
        self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await handler(reader, writer)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, h11.ProtocolError, ValueError):
                pass
            except Exception:  # a bug here must not take the server down; the model just loses a connection
                log.exception("sandbox gateway: unexpected error")
            finally:
                self._tasks.discard(task)
                writer.close()

        return run

    # --- the egress proxy -----------------------------------------------------------------------

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line, _, rest = head.partition(b"\r\n")
        method, target, version = _request_line(line)
        if method == "CONNECT":
            host, port = _host_port(target, 443)
            verdict = await self.egress.admit("https", host, port)
            if isinstance(verdict, Refusal):
                return await self._refuse(writer, f"{host}:{port}", verdict.reason)
            upstream = await _connect(verdict, port)
            if upstream is None:
                return await _answer(writer, 502, f"could not connect to {host}:{port}")
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await _splice(reader, writer, *upstream)
            return
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            return await _answer(writer, 400, "send CONNECT, or an absolute http:// URL")
        port = parts.port or 80
        verdict = await self.egress.admit("http", parts.hostname, port)
        if isinstance(verdict, Refusal):
            return await self._refuse(writer, f"{parts.hostname}:{port}", verdict.reason)
        upstream = await _connect(verdict, port)
        if upstream is None:
            return await _answer(writer, 502, f"could not connect to {parts.hostname}:{port}")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = b"\r\n".join(
            h for h in rest.split(b"\r\n") if h and not h.lower().startswith((b"proxy-", b"connection:"))
        )
        upstream[1].write(
            f"{method} {path} {version}\r\n".encode("latin-1") + headers + b"\r\nConnection: close\r\n\r\n"
        )
        await _splice(reader, writer, *upstream)

    async def _storage(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The loopback storage endpoint, byte for byte (its presigned URLs are the capability)."""
        assert self.storage is not None
        host, port = self.storage
        try:
            upstream = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), port), 15.0)
        except (OSError, TimeoutError):
            return
        await _splice(reader, writer, *upstream)

    async def _refuse(self, writer: asyncio.StreamWriter, target: str, reason: str) -> None:
        line = f"cogport: egress to {target} refused: {reason}"
        if self.on_refusal is not None:
            self.on_refusal(line)
        await _answer(writer, 403, line)

    # --- the gateway ----------------------------------------------------------------------------

    async def _gateway(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=_HEAD_LIMIT)
        event = await _next(connection, reader)
        if not isinstance(event, h11.Request):
            return
        method = event.method.decode("ascii", "replace")
        target = event.target.decode("ascii", "replace")
        if method in ("GET", "HEAD") and self.weights_path is not None and target == self.weights_path:
            return await self._serve_weights(connection, writer, method, dict(event.headers).get(b"range"))
        client = self._http()
        if method in ("GET", "HEAD") and _DOWNLOAD.match(target):
            request = client.build_request(method, self.internal_base + target)
        elif method == "PUT" and target.startswith(SANDBOX_UPLOADS) and self.upload_url is not None:
            name = target[len(SANDBOX_UPLOADS) :]
            if not name or "/" in name or "?" in name:
                return await _h11_answer(connection, writer, 400, "one file name after the upload URL")
            sent = dict(event.headers)
            content_type = sent.get(b"content-type", b"application/octet-stream")
            if int(sent.get(b"content-length", b"0") or 0) > self.upload_max_bytes:
                return await self._too_large(connection, reader, writer)
            request = client.build_request(
                "PUT",
                self.upload_url + name,
                content=self._body(connection, reader),
                headers={"Content-Type": content_type.decode("latin-1")},
            )
        else:
            return await _h11_answer(
                connection, writer, 403, "the sandbox reaches only its inputs and its uploads here"
            )
        try:
            response = await client.send(request, stream=True)
        except _TooLarge:
            return await self._too_large(connection, reader, writer)
        except httpx.HTTPError as exc:
            return await _h11_answer(connection, writer, 502, f"cogport could not be reached: {exc}")
        try:
            keep = ("content-type", "content-length", "location", "content-range", "accept-ranges", "etag")
            headers = [(k, v) for k, v in response.headers.items() if k.lower() in keep]
            headers.append(("connection", "close"))
            writer.write(connection.send(h11.Response(status_code=response.status_code, headers=headers)) or b"")
            async for chunk in response.aiter_raw(_CHUNK):
                writer.write(connection.send(h11.Data(data=chunk)) or b"")
                await writer.drain()
            writer.write(connection.send(h11.EndOfMessage()) or b"")
            await writer.drain()
        finally:
            await response.aclose()

    async def _serve_weights(
        self, connection: h11.Connection, writer: asyncio.StreamWriter, method: str, ranged: bytes | None
    ) -> None:
        """The weights file, whole or one byte range (``pget`` and other parallel downloaders ask for ranges)."""
        assert self.weights is not None
        try:
            handle = await asyncio.to_thread(self.weights.open, "rb")
        except OSError:
            return await _h11_answer(connection, writer, 404, "the weights are not on this machine any more")
        with handle:
            size = os.fstat(handle.fileno()).st_size
            start, end, status = 0, size - 1, 200
            match = _RANGE.match(ranged.decode("latin-1").strip()) if ranged else None
            if match and (match.group(1) or match.group(2)):
                if match.group(1):
                    start, end = int(match.group(1)), min(int(match.group(2) or size - 1), size - 1)
                else:  # the last N bytes
                    start = max(0, size - int(match.group(2)))
                if start > end or start >= size:
                    return await _h11_answer(connection, writer, 416, f"the weights are {size} bytes")
                status = 206
            headers = [
                ("content-type", "application/octet-stream"),
                ("content-length", str(end - start + 1)),
                ("accept-ranges", "bytes"),
                ("connection", "close"),
            ]
            if status == 206:
                headers.append(("content-range", f"bytes {start}-{end}/{size}"))
            writer.write(connection.send(h11.Response(status_code=status, headers=headers)) or b"")
            if method == "GET":
                handle.seek(start)
                left = end - start + 1
                while left > 0 and (chunk := await asyncio.to_thread(handle.read, min(_CHUNK * 16, left))):
                    left -= len(chunk)
                    writer.write(connection.send(h11.Data(data=chunk)) or b"")
                    await writer.drain()
            writer.write(connection.send(h11.EndOfMessage()) or b"")
            await writer.drain()

    async def _too_large(
        self, connection: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer 413 naming the bound, once the sender is done (an HTTP client that is still sending does not
        read the answer): the rest of the body is read and dropped, for up to a minute."""
        with contextlib.suppress(TimeoutError, h11.ProtocolError):
            async with asyncio.timeout(60):
                while not isinstance(await _next(connection, reader), h11.EndOfMessage | h11.ConnectionClosed):
                    pass
        message = (
            f"the output file is larger than this server's upload limit, {self.upload_limit} "
            "(COGPORT_SANDBOX__UPLOAD_MAX_MB)"
        )
        if self.on_refusal is not None:
            self.on_refusal(f"cogport: {message}")
        await _h11_answer(connection, writer, 413, message)

    async def _body(self, connection: h11.Connection, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        received = 0
        while True:
            event = await _next(connection, reader)
            if isinstance(event, h11.Data):
                received += len(event.data)
                if received > self.upload_max_bytes:
                    raise _TooLarge()
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return


class _TooLarge(Exception):
    pass


async def _next(connection: h11.Connection, reader: asyncio.StreamReader) -> object:
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            return event
        connection.receive_data(await reader.read(_CHUNK))


async def _h11_answer(connection: h11.Connection, writer: asyncio.StreamWriter, status: int, text: str) -> None:
    body = (text + "\n").encode()
    headers = [("content-type", "text/plain"), ("content-length", str(len(body))), ("connection", "close")]
    with contextlib.suppress(h11.LocalProtocolError):
        writer.write(connection.send(h11.Response(status_code=status, headers=headers)) or b"")
        writer.write(connection.send(h11.Data(data=body)) or b"")
        writer.write(connection.send(h11.EndOfMessage()) or b"")
    await writer.drain()


def _request_line(line: bytes) -> tuple[str, str, str]:
    parts = line.decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError("not an HTTP/1 request line")
    return parts[0].upper(), parts[1], parts[2]


def _host_port(target: str, default: int) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or "]" in port:
        return target.strip("[]"), default
    return host.strip("[]"), int(port)


async def _connect(verdict: Admitted, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    for address in verdict.addresses:
        with contextlib.suppress(OSError, TimeoutError):
            return await asyncio.wait_for(asyncio.open_connection(str(address), port), 15.0)
    return None


async def _answer(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 413: "Payload Too Large", 502: "Bad Gateway"}[status]
    body = (text + "\n").encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
) -> None:
    try:
        await asyncio.gather(_pump(reader, upstream_writer), _pump(upstream_reader, writer))
    finally:
        upstream_writer.close()

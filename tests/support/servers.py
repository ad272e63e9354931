"""Live servers a test starts and stops itself (the ``live_server`` fixture lives as long as the test):
to restart a server on the same data directory and database, or to serve over TLS."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from cogport.app import create_app
from cogport.settings import Settings
from tests.conftest import LiveServer


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def _serve(*servers: tuple[uvicorn.Server, socket.socket]) -> Iterator[None]:
    """Run uvicorn servers in one thread and one event loop (the app's database pool is bound to it)."""

    async def serve_all() -> None:
        await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in servers))

    thread = threading.Thread(target=asyncio.run, args=(serve_all(),), daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if all(server.started for server, _ in servers):
                break
            if not thread.is_alive():
                raise RuntimeError("the server failed to start")
            threading.Event().wait(0.02)
        else:
            raise RuntimeError("the server did not start in time")
        yield
    finally:
        for server, _ in servers:
            server.should_exit = True
        thread.join(timeout=30)
        for _, sock in servers:
            sock.close()


def _server(app: FastAPI, **config: Any) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", **config))


@contextmanager
def running(settings: Settings, *, tls: tuple[Path, Path] | None = None) -> Iterator[LiveServer]:
    """Serve ``create_app(settings)`` on an ephemeral loopback port until the block ends.

    ``tls``: ``(certfile, keyfile)``: serve HTTPS at ``https://localhost:<port>`` (the ``public_url``),
    and the same app over plain HTTP on a second loopback port for coglet instances (``internal_url``),
    as an operator would behind a TLS-terminating proxy.
    """
    sock = _socket()
    port: int = sock.getsockname()[1]
    settings.port = port
    plain = None
    if tls is not None:
        plain = _socket()
        settings.public_url = f"https://localhost:{port}"
        settings.internal_url = f"http://127.0.0.1:{plain.getsockname()[1]}"
    application = create_app(settings)
    if tls is None:
        with _serve((_server(application, lifespan="on"), sock)):
            yield LiveServer(url=f"http://127.0.0.1:{port}", app=application, settings=settings)
        return
    assert plain is not None
    secure = _server(application, lifespan="on", ssl_certfile=str(tls[0]), ssl_keyfile=str(tls[1]))
    # The same app on the plain socket, started once (by the TLS server's lifespan).
    with _serve((secure, sock), (_server(application, lifespan="off"), plain)):
        yield LiveServer(url=f"https://localhost:{port}", app=application, settings=settings)

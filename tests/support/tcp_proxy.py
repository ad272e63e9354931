"""A TCP proxy in front of a live server that drops prediction streams on purpose: the network failing
between a client and the server, for real (the client sees its connection close mid-response).

Bytes pass through untouched, so the server builds its URLs (``urls.stream``) on the proxy's address and
the client comes back through it. A connection that sends ``GET /v1/streams/`` is a stream connection; the
``n``-th (from 0) is treated as ``plan(n)`` says:

- ``None``: passed through whole;
- ``k >= 0``: cut inside the ``k+1``-th event of the stream (after ``k`` whole events);
- ``REFUSE``: closed as soon as the request is seen, before any answer.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

REFUSE = -1
STREAM_REQUEST = b"GET /v1/streams/"
Plan = Callable[[int], int | None]


class CuttingProxy:
    def __init__(self, upstream: str, plan: Plan) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.plan = plan
        self.streams = 0  # stream connections seen
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False

    def serve(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(client,), daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _connection(self, client: socket.socket) -> None:
        server = socket.create_connection(self.upstream)
        state = _Connection(client, server)
        threading.Thread(target=self._requests, args=(state,), daemon=True).start()
        self._responses(state)

    def _requests(self, state: _Connection) -> None:
        """Client to server, watching for the stream request."""
        while chunk := _recv(state.client):
            if STREAM_REQUEST in chunk and not state.is_stream:
                state.is_stream = True
                with self._lock:
                    number, self.streams = self.streams, self.streams + 1
                keep = self.plan(number)
                if keep == REFUSE:
                    state.cut()
                    return
                state.keep = keep
                state.stream_from = len(state.received)  # the answers before it were read whole
            try:
                state.server.sendall(chunk)
            except OSError:
                break
        state.cut()

    def _responses(self, state: _Connection) -> None:
        """Server to client, cutting a stream where the plan says."""
        while chunk := _recv(state.server):
            state.received += chunk
            cut = state.cut_at()
            end = len(state.received) if cut is None else min(cut, len(state.received))
            try:
                state.client.sendall(bytes(state.received[state.forwarded : end]))
            except OSError:
                break
            state.forwarded = end
            if cut is not None and end == cut:
                break
        state.cut()


class _Connection:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.received = bytearray()  # everything the server sent on this connection
        self.forwarded = 0  # how much of it went on to the client
        self.is_stream = False
        self.keep: int | None = None  # whole events to let through, on a stream connection to cut
        self.stream_from = 0  # where the stream's answer starts in ``received``

    def cut_at(self) -> int | None:
        """Where to stop forwarding: a few bytes into the data of event ``keep`` (counting from 0)."""
        if self.keep is None:
            return None
        position = self.stream_from
        for _ in range(self.keep + 1):
            found = self.received.find(b"\ndata: ", position)
            if found < 0:
                return None
            position = found + len(b"\ndata: ")
        return position + 1  # inside the data line: the event never ends

    def cut(self) -> None:
        for sock in (self.client, self.server):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


@contextmanager
def cutting_proxy(upstream: str, plan: Plan) -> Iterator[CuttingProxy]:
    proxy = CuttingProxy(upstream, plan)
    thread = threading.Thread(target=proxy.serve, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.close()
        thread.join(timeout=10)

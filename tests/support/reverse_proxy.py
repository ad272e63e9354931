"""A reverse proxy in front of a live server that clients reach under another name (issue 18).

What a team puts in front of cogport (nginx, a load balancer, a LAN name): the proxy listens on a port of
its own and clients use ``http://localhost:<port>``, a name and port the server itself never listens on.
Bytes pass through untouched (the client's ``Host`` reaches the server, as with nginx's
``proxy_set_header Host $http_host``), so every URL cogport answers with (``urls.get``, ``urls.stream``,
``next``, file URLs) must be built on that name for the client to come back through the proxy.
``COGPORT_PUBLIC_URL`` stays unset: the default configuration.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.tcp_proxy import CuttingProxy

NAME = "localhost"


@contextmanager
def reverse_proxy(upstream: str) -> Iterator[str]:
    """Serve ``upstream`` (``http://127.0.0.1:<port>``) through a proxy; yields the URL clients use."""
    proxy = CuttingProxy(upstream, plan=lambda _: None)  # never cuts: a plain pass-through
    thread = threading.Thread(target=proxy.serve, daemon=True)
    thread.start()
    port = proxy.url.rsplit(":", 1)[1]
    try:
        yield f"http://{NAME}:{port}"
    finally:
        proxy.close()

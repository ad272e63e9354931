"""Finding 5 (host services): goes for the host's services and returns, as JSON, what answered.

``arg`` is JSON: ``direct`` (loopback ports to connect to: PostgreSQL, Redis, MySQL, RabbitMQ, the API),
``proxied`` (``host:port`` targets to ask the egress proxy, ``HTTP_PROXY``, for: an absolute-form ``GET``
and a ``CONNECT`` each), ``gateway`` (``[method, path]`` requests sent to cogport's own address as the model
sees it, ``internal``: ``host:port``). A connection that succeeds is asked ``GET /v1/predictions``.
"""

import errno
import json
import os
import socket
from urllib.parse import urlsplit

import requests
from cog import BaseRunner, Input


def _errno(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def _exchange(host: str, port: int, request: bytes) -> str:
    """Send ``request`` to ``host:port``; the answer's status line, or the connect error."""
    try:
        sock = socket.create_connection((host, port), timeout=5)
    except OSError as exc:
        return _errno(exc)
    answer = b""
    try:
        sock.sendall(request)
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    except OSError as exc:
        return f"connected, then {_errno(exc)}"
    finally:
        sock.close()
    return answer.split(b"\r\n", 1)[0].decode("latin-1") or "connected, no answer"


class Runner(BaseRunner):
    def run(self, arg: str = Input(default="{}", description="JSON: what to try")) -> str:
        given = json.loads(arg)
        proxy = urlsplit(os.environ.get("HTTP_PROXY", "http://127.0.0.1:3128"))
        proxy_host, proxy_port = proxy.hostname or "127.0.0.1", proxy.port or 3128
        found: dict[str, object] = {"proxy": f"{proxy_host}:{proxy_port}"}
        found["direct"] = {
            str(port): _exchange("127.0.0.1", port, b"GET /v1/predictions HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            for port in given.get("direct", [])
        }
        found["proxied_get"] = {
            target: _exchange(
                proxy_host, proxy_port, f"GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()
            )
            for target in given.get("proxied", [])
        }
        found["proxied_connect"] = {
            target: _exchange(proxy_host, proxy_port, f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            for target in given.get("proxied", [])
        }
        try:  # the way model code usually gets there: requests, through HTTP_PROXY from the environment
            response = requests.get("http://169.254.169.254/latest/meta-data/", timeout=10)
            found["requests_metadata"] = [response.status_code, response.text[:300]]
        except requests.RequestException as exc:
            found["requests_metadata"] = [0, repr(exc)[:300]]
        host, _, port = str(given.get("internal", "127.0.0.1:8000")).rpartition(":")
        found["gateway"] = {
            f"{method} {path}": _exchange(
                host, int(port), f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\nhi".encode()
            )
            for method, path in given.get("gateway", [])
        }
        return json.dumps(found)

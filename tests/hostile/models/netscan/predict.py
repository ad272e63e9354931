"""Finding 3 (another tenant's instance): looks for a way to another instance and returns, as JSON, every
connection that succeeded and what answered there.

It reads ``/proc/net/tcp``, ``tcp6`` and ``unix``, connects to every listening TCP port it finds plus
common ones (5000-5010, 8000, 8080) on 127.0.0.1 and ::1, to every unix socket file under ``/tmp``,
``/run`` and ``/dev/shm`` and every path ``/proc/net/unix`` names, and to the host paths it is given
(``arg``: JSON ``{"paths": [...], "marker": "..."}``). Each stream socket that accepts is asked for
``GET /openapi.json``; ``marker`` (a string only the other model's schema has) in an answer means it got
through.
"""

import json
import os
import socket
import stat

from cog import BaseRunner, Input

COMMON = [*range(5000, 5011), 8000, 8080]


def _listening_tcp() -> set[int]:
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 3 and fields[3] == "0A":  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _unix_names() -> tuple[set[str], set[str]]:
    """Socket paths and abstract names (without the leading ``@``) in ``/proc/net/unix``."""
    paths: set[str] = set()
    abstract: set[str] = set()
    try:
        with open("/proc/net/unix") as handle:
            rows = handle.read().splitlines()[1:]
    except OSError:
        return paths, abstract
    for row in rows:
        fields = row.split(None, 7)
        if len(fields) == 8:
            name = fields[7]
            (abstract.add(name[1:]) if name.startswith("@") else paths.add(name))
    return paths, abstract


def _socket_files(*roots: str) -> set[str]:
    found: set[str] = set()
    for root in roots:
        for directory, _, files in os.walk(root):
            for name in files:
                path = os.path.join(directory, name)
                try:
                    if stat.S_ISSOCK(os.lstat(path).st_mode):
                        found.add(path)
                except OSError:
                    pass
    return found


def _probe(family: int, address: object, marker: str, ask: bool = True) -> dict[str, object] | None:
    """Connect; None when refused. Asks stream sockets for ``/openapi.json`` and reports the answer."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(address)  # type: ignore[arg-type]
    except OSError:
        sock.close()
        return None
    answer = b""
    if ask:
        try:
            sock.sendall(b"GET /openapi.json HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            while len(answer) < 1 << 20:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                answer += chunk
        except OSError:
            pass
    sock.close()
    text = answer.decode("utf-8", "replace")
    return {"first_line": text.split("\r\n", 1)[0], "reached_other": bool(marker) and marker in text}


class Runner(BaseRunner):
    def run(self, arg: str = Input(default="{}", description="JSON: paths to try, the marker to look for")) -> str:
        given = json.loads(arg or "{}")
        marker = str(given.get("marker", ""))
        listening = _listening_tcp()
        paths, abstract = _unix_names()
        files = _socket_files("/tmp", "/run", "/dev/shm")
        connected: dict[str, object] = {}
        for port in sorted(listening | set(COMMON)):
            for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                answer = _probe(family, (host, port), marker)
                if answer is not None:
                    connected[f"tcp {host}:{port}"] = answer
        tried_paths = sorted(paths | files | set(given.get("paths", [])))
        for path in tried_paths:
            answer = _probe(socket.AF_UNIX, path, marker)
            if answer is not None:
                connected[f"unix {path}"] = answer
        for name in sorted(abstract):  # coglet's own worker channels: connect only, never talk
            if _probe(socket.AF_UNIX, "\0" + name, marker, ask=False) is not None:
                connected[f"abstract @{name}"] = {"first_line": "", "reached_other": False}
        return json.dumps(
            {
                "listening": sorted(listening),
                "unix_paths": tried_paths,
                "abstract": sorted(abstract),
                "connected": connected,
            }
        )

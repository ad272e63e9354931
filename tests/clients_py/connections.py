"""The TCP ports this process connects to, seen by an audit hook (``socket.connect``), changing nothing.

The server also listens on its own loopback address, so a URL built on that address instead of the proxy's
would still work; the tests compare these ports with the proxy's to show every request went through it.
"""

import sys
from typing import Any

PORTS: set[int] = set()


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and isinstance(args[1], tuple) and len(args[1]) >= 2:
        PORTS.add(int(args[1][1]))


sys.addaudithook(_hook)


def ports() -> list[int]:
    return sorted(PORTS)

"""Free loopback ports for coglet instances (coglet binds ``PORT`` itself, so there is a short race)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now; the kernel hands these out round-robin, so reuse is rare."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port

"""Finding 7 (limits): ``arg`` names what to overrun; returns, as JSON, how far it got and the error.

* ``tmp``: writes 100 MiB to ``/tmp``, 1 MiB at a time;
* ``memory``: allocates 512 MiB and touches every page;
* ``forkbomb``: forks children that sleep until a fork fails (or 2000 ran), then kills them;
* ``metadata``: connects straight to 169.254.169.254:80 (the cloud metadata service);
* anything else: returns at once (the instance is fine).
"""

import contextlib
import errno
import json
import os
import signal
import socket
import time

from cog import BaseRunner, Input


def _errno(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def fill_tmp() -> dict[str, object]:
    written, error = 0, None
    chunk = b"x" * (1 << 20)
    try:
        with open("/tmp/fill.bin", "wb", buffering=0) as handle:
            while written < 100 << 20:
                written += handle.write(chunk)
    except OSError as exc:
        error = _errno(exc)
    finally:
        with contextlib.suppress(OSError):
            os.unlink("/tmp/fill.bin")
    return {"written_mb": written >> 20, "error": error}


def allocate() -> dict[str, object]:
    block = bytearray(512 << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return {"allocated_mb": len(block) >> 20}


def fork_bomb() -> dict[str, object]:
    kids: list[int] = []
    error = None
    try:
        while len(kids) < 2000:
            pid = os.fork()
            if pid == 0:  # the child: sleeps, never returns into the model
                time.sleep(60)
                os._exit(0)
            kids.append(pid)
    except OSError as exc:
        error = _errno(exc)
    for pid in kids:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return {"forked": len(kids), "error": error}


def metadata() -> dict[str, object]:
    try:
        socket.create_connection(("169.254.169.254", 80), timeout=5).close()
    except OSError as exc:
        return {"error": _errno(exc)}
    return {"error": None}


class Runner(BaseRunner):
    def run(self, arg: str = Input(default="", description="What to overrun")) -> str:
        attacks = {"tmp": fill_tmp, "memory": allocate, "forkbomb": fork_bomb, "metadata": metadata}
        attack = attacks.get(arg)
        return json.dumps(attack() if attack else {"fine": True})

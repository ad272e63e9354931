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


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            pass


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    connect: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None,
) -> None:
    try:
        assert connect is not None
        upstream_reader, upstream_writer = await connect
    except OSError:
        writer.close()
        return
    sock = upstream_writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await asyncio.gather(_pump(reader, upstream_writer), _pump(upstream_reader, writer))
    upstream_writer.close()
    writer.close()


async def _serve(config: dict[str, object], child: subprocess.Popen[bytes]) -> int:
    loop = asyncio.get_running_loop()
    servers: list[asyncio.AbstractServer] = []
    listen = config.get("listen")
    if isinstance(listen, list):
        fd, coglet_port = int(listen[0]), int(listen[1])

        async def to_coglet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            opening = asyncio.open_connection("127.0.0.1", coglet_port)
            await _splice(reader, writer, asyncio.ensure_future(opening))

        servers.append(await asyncio.start_unix_server(to_coglet, sock=socket.socket(fileno=fd), limit=_CHUNK))
    for host, port, path in config.get("forwards") or []:  # type: ignore[attr-defined]

        def relay(target: str) -> object:
            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await _splice(reader, writer, asyncio.ensure_future(asyncio.open_unix_connection(target)))

            return handle

        servers.append(await asyncio.start_server(relay(str(path)), str(host), int(port), limit=_CHUNK))  # type: ignore[arg-type]
    exited: asyncio.Future[int] = loop.create_future()

    def reaped() -> None:
        code = child.poll()
        if code is not None and not exited.done():
            exited.set_result(code)

    loop.add_signal_handler(signal.SIGCHLD, reaped)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, child.send_signal, sig)
    reaped()
    code = await exited
    for server in servers:
        server.close()
    return code


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

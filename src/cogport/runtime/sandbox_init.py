"""The first program of every sandbox: drop to the tenant's uid, relay what crosses the boundary, run the model.

This file is bound read-only into each sandbox (``/run/cogport/init.py``) and run by the venv's interpreter
with ``-I -S`` (no site, no ``PYTHON*`` variables, no ``.pth`` files: nothing of the tenant's venv is
imported), so it may use the standard library only. Its one argument is a JSON object:

* ``uid``/``gid``: where cogport runs as root, bubblewrap starts this program as root inside the new
  namespaces with only CAP_SETUID, CAP_SETGID, CAP_SETPCAP, CAP_CHOWN (for ``own``, below) and
  CAP_NET_BIND_SERVICE (cogport's own port inside may be below 1024: it binds its listeners first); it
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

The relays are a thread per direction of each connection (blocking ``recv``/``sendall``), the accepts one
``selectors`` loop: no asyncio, whose import alone costs tens of milliseconds of every start.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import threading

_CHUNK = 1 << 16
# No asyncio, subprocess or ctypes (but to drop privileges) here: this runs before every instance and build
# step, and importing asyncio alone costs tens of milliseconds of the start. A thread per relayed stream.


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


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Bytes from ``source`` to ``target`` until ``source`` ends, then end ``target``'s side. A TCP source
    ACKs each read at once (``TCP_QUICKACK``): coglet writes an event stream in small pieces, and a
    delayed ACK against its Nagle would hold each piece up to 40 ms."""
    quickack = _tcp(source) and hasattr(socket, "TCP_QUICKACK")
    try:
        while data := source.recv(_CHUNK):
            if quickack:
                source.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def _relay(client: socket.socket, family: int, address: tuple[str, int] | str) -> None:
    upstream = socket.socket(family, socket.SOCK_STREAM)
    try:
        try:
            upstream.connect(address)
        except OSError:
            return
        for sock in (client, upstream):
            if _tcp(sock):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
    finally:
        upstream.close()
        client.close()


def _listeners(config: dict[str, object]) -> list[tuple[socket.socket, int, tuple[str, int] | str]]:
    """``(listening socket, family, address to relay to)`` for coglet's socket and every forward."""
    found: list[tuple[socket.socket, int, tuple[str, int] | str]] = []
    listen = config.get("listen")
    if isinstance(listen, list):
        found.append((socket.socket(fileno=int(listen[0])), socket.AF_INET, ("127.0.0.1", int(listen[1]))))
    for host, port, path in config.get("forwards") or []:  # type: ignore[attr-defined]
        inside = socket.socket(socket.AF_INET6 if ":" in str(host) else socket.AF_INET, socket.SOCK_STREAM)
        inside.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        inside.bind((str(host), int(port)))
        inside.listen(128)
        found.append((inside, socket.AF_UNIX, str(path)))
    return found


def _serve(listeners: list[tuple[socket.socket, int, tuple[str, int] | str]]) -> None:
    """Accept on every listener for ever, a relay thread per connection."""
    selector = selectors.DefaultSelector()
    for listener, family, address in listeners:
        selector.register(listener, selectors.EVENT_READ, (family, address))
    while True:
        for key, _ in selector.select():
            try:
                client, _ = key.fileobj.accept()  # type: ignore[union-attr]
            except OSError:
                continue
            family, address = key.data
            threading.Thread(target=_relay, args=(client, family, address), daemon=True).start()


def _wait(pid: int) -> None:
    """Exit as the program does, once it does (killed by a signal: by the same signal, for the host to see)."""
    _, status = os.waitpid(pid, 0)
    sys.stdout.flush()
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status))  # relays still open end with the process


def main(argv: list[str]) -> None:
    config = json.loads(argv[1])
    listeners = _listeners(config)  # before the program starts (its first connection finds them), as root
    if config.get("uid") is not None:
        uid, gid = int(config["uid"]), int(config["gid"])
        for path in config.get("own") or []:  # the working directory's writable layer: copied up, the host's untouched
            os.chown(path, uid, gid)
        drop_privileges(uid, gid)
    listen = config.get("listen")
    if isinstance(listen, list):
        os.set_inheritable(int(listen[0]), False)
    program = [str(arg) for arg in config["argv"]]
    pid = os.posix_spawnp(program[0], program, os.environ)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _frame: os.kill(pid, number))
    threading.Thread(target=_serve, args=(listeners,), daemon=True).start()
    _wait(pid)  # in the main thread: only it may reset a signal's disposition


if __name__ == "__main__":
    main(sys.argv)

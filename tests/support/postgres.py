"""A PostgreSQL of a test's own: initialised in a temp dir, on a free port, stopped and started at will
(the chaos tests take the database away under a running server).

PostgreSQL refuses to run as root: as root, it runs as ``nobody`` (its directory, a fresh one under the
temp dir, which ``nobody`` can reach, is chowned to it); as any other user, as that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.processes import free_port

__all__ = ["PrivatePostgres", "private_postgres"]


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise FileNotFoundError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


class PrivatePostgres:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="cogport-pg-"))
        self.data = self.directory / "pgdata"
        self.port = free_port()
        self.bin = _bin_dir()
        self._as_nobody = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        prefix = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"] if self._as_nobody else []
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=timeout, cwd=self.directory)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def init(self) -> None:
        if self._as_nobody:
            os.chown(self.directory, 65534, 65534)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-w", "-l", str(self.log), "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: sessions are disconnected; ``immediate``: as if the server died."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def log(self) -> Path:
        return self.directory / "postgres.log"

    def running(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True
        return False


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started PostgreSQL, stopped (whatever state it is in) and removed at the end."""
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError, RuntimeError):
            if server.running():
                server.stop("immediate")
        shutil.rmtree(server.directory, ignore_errors=True)

"""What ``/proc`` says about an instance's process group: members, resident memory, exit codes.

coglet's worker is a child of the coglet server, not of cogport, so its exit status cannot be waited
for; but coglet does not reap a crashed worker at once, and a zombie's ``/proc/<pid>/stat`` still
holds its wait status. Linux only; every function tolerates processes vanishing mid-read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    pgid: int
    state: str
    """One letter: ``R`` running, ``S`` sleeping, ``Z`` zombie, ..."""
    rss_bytes: int
    wait_status: int
    """The status ``waitpid`` would return (meaningful for zombies only)."""

    @property
    def exit_code(self) -> int:
        """``returncode`` in :mod:`subprocess` terms: the exit status, or minus the killing signal."""
        signal = self.wait_status & 0x7F
        return -signal if signal else (self.wait_status >> 8) & 0xFF


def read_process(pid: int) -> ProcessInfo | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    if len(fields) < 22:
        return None
    wait_status = int(fields[49]) if len(fields) > 49 else 0
    return ProcessInfo(
        pid=pid,
        state=fields[0],
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        rss_bytes=int(fields[21]) * _PAGE_SIZE,
        wait_status=wait_status,
    )


def group_processes(pgid: int) -> list[ProcessInfo]:
    """Every process (zombies included) whose process group is ``pgid``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        info = read_process(int(name))
        if info is not None and info.pgid == pgid:
            found.append(info)
    return found


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of the whole group (shared pages counted once per process)."""
    return sum(p.rss_bytes for p in group_processes(pgid))

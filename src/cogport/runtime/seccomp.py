"""The seccomp filter model code runs under: a classic-BPF program for bubblewrap's ``--seccomp FD``.

bwrap reads an array of ``struct sock_filter`` (native endianness) from the fd until EOF and installs it
right before it execs the model's command, so it binds every process of the sandbox. The policy is a
deny-list in the spirit of Docker's default profile; everything not named below is allowed.

- Another ABI than the native one (i386 ``int 0x80`` on x86_64, AArch32 on aarch64) kills the process:
  the deny-list below is only valid for the native syscall numbers. x32 calls on x86_64 (the
  ``0x40000000`` bit of the number) fail with ``EPERM``.
- Namespaces: ``unshare``, ``setns``, and ``clone`` with any ``CLONE_NEW*`` flag fail with ``EPERM``.
  The sandbox's user namespace gives the model a full capability set over namespaces it creates
  itself, which opens kernel code (mount, netfilter, ...) that is reachable only with capabilities.
  ``clone3`` fails with ``ENOSYS``: its flags are in memory a filter cannot read, and glibc falls back
  to ``clone`` on ``ENOSYS`` (for threads, fork and posix_spawn alike).
- Mounts: ``mount``, ``umount2``, ``pivot_root`` and the new mount API (``fsopen``, ``fsconfig``,
  ``fsmount``, ``fspick``, ``move_mount``, ``open_tree``, ``open_tree_attr``, ``mount_setattr``).
- Other processes and the kernel's memory: ``ptrace``, ``process_vm_readv``/``writev``, ``kcmp``,
  ``pidfd_getfd``, ``perf_event_open``, ``bpf``, ``userfaultfd``, ``lookup_dcookie``, and io_uring
  (``io_uring_setup``, ``_enter``, ``_register``): a frequent source of kernel exploits.
- Kernel keyrings: ``add_key``, ``keyctl``, ``request_key``.
- Host state: clocks (``clock_settime``, ``clock_adjtime``, ``settimeofday``), modules (``init_module``,
  ``finit_module``, ``delete_module``, ``create_module``, ``query_module``, ``get_kernel_syms``),
  ``kexec_load``, ``kexec_file_load``, ``reboot``, ``swapon``, ``swapoff``, ``acct``, ``quotactl``,
  ``quotactl_fd``, ``syslog``, ``sethostname``, ``setdomainname``, ``fanotify_init``,
  ``name_to_handle_at``, ``open_by_handle_at`` (opens any file of a mount by its handle),
  ``lsm_set_self_attr``, and the obsolete ``_sysctl``, ``sysfs``, ``ustat``, ``uselib``,
  ``nfsservctl``, ``iopl``, ``ioperm``.
- ``personality`` only with the values Docker allows (``0``, ``PER_LINUX32``, ``UNAME26`` and their
  combination, and ``0xffffffff`` to query); others fail with ``EPERM`` (e.g. ``ADDR_NO_RANDOMIZE``).

Syscalls that do not exist on an architecture (aarch64 has the generic table, without the legacy
calls) are simply absent from its program.
"""

from __future__ import annotations

import errno
import functools
import os
import platform
import struct
import sys

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_X32_SYSCALL_BIT = 0x40000000

# BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
_LD_W_ABS = 0x20
_JMP_JEQ_K = 0x15
_JMP_JSET_K = 0x45
_RET_K = 0x06
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000

# Offsets in struct seccomp_data {int nr; u32 arch; u64 instruction_pointer; u64 args[6]}.
_NR = 0
_ARCH = 4
_ARG0_LOW = 16 if sys.byteorder == "little" else 20

_CLONE_NAMESPACES = (
    0x00000080  # CLONE_NEWTIME
    | 0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
PERSONALITY_ALLOWED = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)

# The syscalls denied with EPERM; (x86_64, generic/aarch64) numbers, None where it does not exist.
DENIED: dict[str, tuple[int | None, int | None]] = {
    "acct": (163, 89),
    "add_key": (248, 217),
    "bpf": (321, 280),
    "clock_adjtime": (305, 266),
    "clock_settime": (227, 112),
    "settimeofday": (164, 170),
    "create_module": (174, None),
    "delete_module": (176, 106),
    "finit_module": (313, 273),
    "init_module": (175, 105),
    "get_kernel_syms": (177, None),
    "query_module": (178, None),
    "kexec_file_load": (320, 294),
    "kexec_load": (246, 104),
    "keyctl": (250, 219),
    "request_key": (249, 218),
    "lookup_dcookie": (212, 18),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "open_tree_attr": (467, 467),
    "name_to_handle_at": (303, 264),
    "open_by_handle_at": (304, 265),
    "nfsservctl": (180, 42),
    "perf_event_open": (298, 241),
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "kcmp": (312, 272),
    "pidfd_getfd": (438, 438),
    "quotactl": (179, 60),
    "quotactl_fd": (443, 443),
    "reboot": (169, 142),
    "setns": (308, 268),
    "unshare": (272, 97),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "sysfs": (139, None),
    "_sysctl": (156, None),
    "uselib": (134, None),
    "ustat": (136, None),
    "userfaultfd": (323, 282),
    "iopl": (172, None),
    "ioperm": (173, None),
    "syslog": (103, 116),
    "fanotify_init": (300, 262),
    "setdomainname": (171, 162),
    "sethostname": (170, 161),
    "lsm_set_self_attr": (460, 460),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
}
# Checked by argument: (x86_64, aarch64).
CLONE = (56, 220)
CLONE3 = (435, 435)
PERSONALITY = (135, 92)


class SeccompUnsupported(RuntimeError):
    """No seccomp program for this machine's architecture."""


def _column(machine: str) -> int:
    if machine not in _AUDIT_ARCH:
        raise SeccompUnsupported(f"no seccomp filter for architecture {machine!r} (only x86_64 and aarch64)")
    return 0 if machine == "x86_64" else 1


def syscall_numbers(machine: str) -> dict[str, int]:
    """The denied syscalls that exist on ``machine`` (a ``platform.machine()`` value), by name."""
    column = _column(machine)
    numbers = {name: nrs[column] for name, nrs in DENIED.items()}
    return {name: nr for name, nr in numbers.items() if nr is not None}


class _Program:
    """Instructions with symbolic forward jumps, resolved (and range-checked) by :meth:`assemble`."""

    def __init__(self) -> None:
        self.code: list[tuple[int, int | str, int | str, int]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int, jt: int | str = 0, jf: int | str = 0) -> None:
        self.code.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def assemble(self) -> bytes:
        out = bytearray()
        for pc, (code, jt, jf, k) in enumerate(self.code):
            offsets = [self.labels[j] - pc - 1 if isinstance(j, str) else j for j in (jt, jf)]
            if not all(0 <= offset <= 255 for offset in offsets):
                raise AssertionError(f"jump out of range at instruction {pc}")
            out += struct.pack("=HBBI", code, offsets[0], offsets[1], k)
        return bytes(out)


def build(machine: str) -> bytes:
    """The program for ``machine`` (``x86_64`` or ``aarch64``); see the module's docstring."""
    column = _column(machine)
    p = _Program()
    p.op(_LD_W_ABS, _ARCH)
    p.op(_JMP_JEQ_K, _AUDIT_ARCH[machine], jt=1)
    p.op(_RET_K, _RET_KILL_PROCESS)
    p.op(_LD_W_ABS, _NR)
    if machine == "x86_64":
        p.op(_JMP_JSET_K, _X32_SYSCALL_BIT, jt="eperm")
    p.op(_JMP_JEQ_K, CLONE[column], jt="clone")
    p.op(_JMP_JEQ_K, CLONE3[column], jt="enosys")
    p.op(_JMP_JEQ_K, PERSONALITY[column], jt="personality")
    for nr in syscall_numbers(machine).values():
        p.op(_JMP_JEQ_K, nr, jt="eperm")
    p.op(_RET_K, _RET_ALLOW)

    p.label("clone")
    p.op(_LD_W_ABS, _ARG0_LOW)  # the flags: only their low 32 bits reach the kernel
    p.op(_JMP_JSET_K, _CLONE_NAMESPACES, jt="eperm")
    p.op(_RET_K, _RET_ALLOW)

    p.label("personality")
    p.op(_LD_W_ABS, _ARG0_LOW)  # an unsigned int
    for value in PERSONALITY_ALLOWED:
        p.op(_JMP_JEQ_K, value, jt="allow")
    p.label("eperm")
    p.op(_RET_K, _RET_ERRNO | errno.EPERM)
    p.label("enosys")
    p.op(_RET_K, _RET_ERRNO | errno.ENOSYS)
    p.label("allow")
    p.op(_RET_K, _RET_ALLOW)
    return p.assemble()


@functools.cache
def filter_program() -> bytes:
    """The program for this machine; :class:`SeccompUnsupported` on another architecture than x86_64/aarch64."""
    return build(platform.machine())


def filter_fd() -> int:
    """A pipe's read end holding :func:`filter_program` (then EOF), for ``bwrap --seccomp FD`` with
    ``pass_fds``; the caller closes it once bwrap is spawned. The program fits in the pipe's buffer."""
    program = filter_program()
    read, write = os.pipe()
    try:
        if os.write(write, program) != len(program):
            raise OSError(f"short write of the seccomp program ({len(program)} bytes) to a pipe")
    except BaseException:
        os.close(read)
        raise
    finally:
        os.close(write)
    return read

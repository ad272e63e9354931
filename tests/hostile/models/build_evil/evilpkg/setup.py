"""A build backend that tries what the security review did: runs when uv builds this local package.

It reads ``targets.json`` (written by the test: the token, the data dir, the database file, the API port,
the shared uv cache), tries each, and ships what it found as the module ``evilpkg_found``.
"""

import json
import os
import socket

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def attempt(action):
    try:
        return action()
    except Exception as exc:  # every failure is a finding
        return f"{type(exc).__name__}: {exc}"[:300]


def connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=3):
        return "connected"


def write(path, mode):
    with open(path, mode) as handle:
        handle.write("evil")
    return "written"


def probe():
    with open(os.path.join(HERE, "targets.json")) as handle:
        targets = json.load(handle)
    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "secrets": sorted(k for k, v in os.environ.items() if k.startswith("COGPORT") or targets["token"] in v),
        "data_dir": attempt(lambda: os.listdir(targets["data_dir"])),
        "database": attempt(lambda: len(open(targets["database"], "rb").read(100))),
        "venvs": attempt(lambda: os.listdir(targets["venvs"])),
        "postgres": attempt(lambda: connect(5432)),
        "api": attempt(lambda: connect(targets["api_port"])),
        "cache_list": attempt(lambda: os.listdir(targets["cache"])),
        "cache_create": attempt(lambda: write(os.path.join(targets["cache"], "evil-was-here"), "w")),
        "cache_modify": attempt(lambda: write(os.path.join(targets["cache"], "CACHEDIR.TAG"), "a")),
        "root_home": attempt(lambda: os.listdir("/root")),
    }


with open(os.path.join(HERE, "evilpkg_found.py"), "w") as handle:
    handle.write(f"FOUND = {json.dumps(probe())!r}\n")

setup(name="evilpkg", version="0.1.0", py_modules=["evilpkg_found"])

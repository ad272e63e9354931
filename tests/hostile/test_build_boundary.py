"""Builds inside the boundary (cogport.build.environment): package code that runs at build time runs in the
model's sandbox, as its uid, and never sees the server's secrets, data, network or shared uv cache.

Real pushes against a live server, real uv: a local package whose ``setup.py`` tries what the security
review did; a wheel with a ``.pth`` file (code at interpreter start-up), which must never run on the host;
venvs tenant code wrote are the model's own, while wheel-only venvs stay shared.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import os
import shutil
import stat
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cogport.db.engine import Database
from cogport.db.tables import Model, Version
from cogport.settings import Settings
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.hostile.conftest import MODELS, ROOT, UID_BASE
from tests.support.pushing import (  # noqa: F401 - fixtures
    UV_CACHE,
    create_model,
    push_dir,
    shared_build_dirs,
    shared_venvs,
)

pytestmark = pytest.mark.usefixtures("shared_build_dirs")

COG_YAML = 'build:\n  python_version: "3.11"\n  python_requirements: requirements.txt\npredict: "predict.py:Runner"\n'


def _model_dir(tmp_path: Path, fixture: str, *, note: str = "") -> Path:
    target = tmp_path / f"{fixture}{note}"
    shutil.copytree(MODELS / fixture, target)
    (target / "cog.yaml").write_text(COG_YAML)
    if note:  # other files, same requirements: another version (no build reuse by content)
        with (target / "predict.py").open("a") as handle:
            handle.write(f"# {note}\n")
    return target


def _push(server: LiveServer, directory: Path, name: str) -> dict[str, Any]:
    create_model(server.url, ADMIN_TOKEN, "admin", name)

    async def go() -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
            return await push_dir(client, directory, f"admin/{name}", wait_s=600)

    build = asyncio.run(go())
    assert build["status"] == "succeeded", build.get("logs")
    return build


def _rows(server: LiveServer, version_id: str) -> tuple[Path, Path, int]:
    """The version's venv and source, and its model's id (the tenant), read through an engine of this thread's own."""

    async def read() -> tuple[Path, Path, int]:
        database = Database(server.settings)
        try:
            async with database.session() as session:
                version = (await session.execute(select(Version).where(Version.id == version_id))).scalar_one()
                model = await session.get(Model, version.model_id)
                assert model is not None and version.venv_path and version.source_path
                return Path(version.venv_path), Path(version.source_path), model.id
        finally:
            await database.dispose()

    return asyncio.run(read())


def _site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python*/site-packages"))


def _digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def _assert_root_owned(venv: Path) -> None:
    """Given back to root: tenant code can never change the venv again."""
    for directory, dirs, files in os.walk(venv):
        for name in [*dirs, *files]:
            info = os.lstat(os.path.join(directory, name))
            assert info.st_uid == 0 and info.st_gid == 0, os.path.join(directory, name)
            if not stat.S_ISLNK(info.st_mode):
                assert not info.st_mode & (stat.S_ISUID | stat.S_ISGID | 0o022), os.path.join(directory, name)


@pytest.fixture
def no_data_binds(settings: Settings, tmp_path: Path) -> None:
    """The suite binds all of ``tmp_path`` (where the data dir is) into sandboxes; here only a directory of its
    own, as an operator's ``COGPORT_RUNTIME__SANDBOX_BINDS`` would (before the server starts)."""
    binds = tmp_path / "binds"
    binds.mkdir()
    settings.runtime.sandbox_binds = [binds]


@pytest.mark.usefixtures("no_data_binds")
def test_a_local_package_builds_in_the_sandbox_and_finds_nothing(
    live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = live_server.settings
    monkeypatch.setenv("COGPORT_ADMIN_TOKEN", ADMIN_TOKEN)  # as a server configured by its environment
    monkeypatch.setenv("COGPORT_SOME_SECRET", "s3cr3t")
    databases = [p for p in settings.data_dir.iterdir() if p.suffix == ".db"]
    UV_CACHE.mkdir(parents=True, exist_ok=True)
    tag = UV_CACHE / "CACHEDIR.TAG"
    if not tag.exists():
        tag.write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    (UV_CACHE / "evil-was-here").unlink(missing_ok=True)  # left by a run of an unconfined build
    before = _digest(tag)
    directory = _model_dir(tmp_path, "build_evil")
    targets = {
        "token": ADMIN_TOKEN,
        "data_dir": str(settings.data_dir),
        "database": str(databases[0] if databases else settings.data_dir / "cogport.db"),
        "venvs": str(settings.build.venvs_dir),
        "api_port": settings.port,
        "cache": str(UV_CACHE),
    }
    (directory / "evilpkg" / "targets.json").write_text(json.dumps(targets))

    build = _push(live_server, directory, "evil")

    assert "building in the model's sandbox" in build["logs"], build["logs"]
    venv, _, tenant = _rows(live_server, build["version"])
    found = json.loads(
        ast.literal_eval((_site_packages(venv) / "evilpkg_found.py").read_text().removeprefix("FOUND = "))
    )
    assert found["uid"] == found["euid"] == (UID_BASE + tenant if ROOT else os.geteuid()), found
    assert found["uid"] != 0
    assert found["secrets"] == [], found  # neither COGPORT_* nor the token's value in its environment
    # The data dir shows only the way to the model's own files (mount points, bound at the same paths).
    assert isinstance(found["data_dir"], str) or set(found["data_dir"]) <= {"builds", "versions"}, found
    for what in ("database", "cache_list", "cache_create", "cache_modify"):
        assert isinstance(found[what], str) and found[what].startswith(("FileNotFoundError", "PermissionError")), (
            what,
            found,
        )
    # /root holds nothing but the way to this host's interpreter (pyenv's), bound read-only.
    assert isinstance(found["root_home"], str) or set(found["root_home"]) <= {".pyenv"}, found
    # The venvs dir: only the venv being built.
    assert isinstance(found["venvs"], str) or found["venvs"] == [venv.name], found
    for what in ("postgres", "api"):
        assert found[what] != "connected", (what, found)
    assert _digest(tag) == before
    assert not (UV_CACHE / "evil-was-here").exists()
    if ROOT:
        _assert_root_owned(venv)
    marker = json.loads(venv.joinpath(".cogport-complete").read_text())
    assert marker.get("model") == tenant, marker


def _pth_wheel(directory: Path, markers: Path) -> str:
    """A wheel from "the index" with a ``.pth`` file: code that runs wherever the venv's interpreter starts."""
    name = "evilpth-0.1.0-py3-none-any.whl"
    code = f"import os; open(os.path.join({str(markers)!r}, 'ran-as-%d' % os.getuid()), 'w').close()\n"
    files = {
        "zz_evil.pth": code,
        "evilpth-0.1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: evilpth\nVersion: 0.1.0\n",
        "evilpth-0.1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + "evilpth-0.1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(directory / name, "w") as wheel:
        for path, text in {**files, "evilpth-0.1.0.dist-info/RECORD": record}.items():
            wheel.writestr(path, text)
    return name


@pytest.mark.parametrize("compile_by", ["nothing", "pyproject", "environment"])
def test_a_pth_file_never_runs_on_the_host(live_server: LiveServer, tmp_path: Path, compile_by: str) -> None:
    """Besides the freeze of the bundle, a model can ask uv to compile bytecode (which starts the venv's
    interpreter, and with it the ``.pth``): in its ``pyproject.toml`` or its cog.yaml environment."""
    markers = tmp_path / "markers"
    markers.mkdir()
    markers.chmod(0o777)  # the sandboxed schema step (as the model's uid) may write here: that is allowed
    directory = _model_dir(tmp_path, "build_local")
    wheel = _pth_wheel(directory, markers)
    (directory / "requirements.txt").write_text(f"./{wheel}\n")
    if compile_by == "pyproject":
        (directory / "pyproject.toml").write_text("[tool.uv.pip]\ncompile-bytecode = true\n")
    elif compile_by == "environment":
        (directory / "cog.yaml").write_text(COG_YAML + "environment:\n  - UV_COMPILE_BYTECODE=1\n")

    build = _push(live_server, directory, f"pth-{compile_by}")

    assert "building in the model's sandbox" not in build["logs"]  # a wheel: phase 1, on the host
    venv, _, tenant = _rows(live_server, build["version"])
    assert (_site_packages(venv) / "zz_evil.pth").is_file()
    ran = sorted(p.name for p in markers.iterdir())
    assert "ran-as-0" not in ran, ran  # not uv, not the freeze of the bundle, nothing on the host
    assert ran == [f"ran-as-{UID_BASE + tenant if ROOT else os.geteuid()}"], ran  # the sandboxed schema step


def test_venvs_tenant_code_wrote_are_the_models_own(live_server: LiveServer, tmp_path: Path) -> None:
    one = _push(live_server, _model_dir(tmp_path, "build_local", note="one"), "local-one")
    two = _push(live_server, _model_dir(tmp_path, "build_local", note="two"), "local-two")
    (v1, _, t1), (v2, _, t2) = _rows(live_server, one["version"]), _rows(live_server, two["version"])
    assert t1 != t2
    assert v1 != v2, "a venv built by model one's package code is not model two's"
    for venv in (v1, v2):
        assert (_site_packages(venv) / "localpkg.py").is_file()

    # Byte-identical files pushed to two models: no reuse of the other model's build when its code ran in it.
    same = _model_dir(tmp_path, "build_local", note="same")
    first = _push(live_server, same, "local-same-a")
    second = _push(live_server, same, "local-same-b")
    assert "reusing that build" not in second["logs"]
    (va, sa, _), (vb, sb, _) = _rows(live_server, first["version"]), _rows(live_server, second["version"])
    assert va != vb and sa != sb, "model b got model a's build, which a's own code ran in"

    # Wheels only (phase 1): one venv, shared.
    wheel_only = 'build:\n  python_version: "3.11"\n  python_packages: ["six==1.17.0"]\npredict: "predict.py:Runner"\n'
    venvs = []
    for note in ("three", "four"):
        directory = _model_dir(tmp_path, "build_local", note=note)
        (directory / "cog.yaml").write_text(wheel_only)
        build = _push(live_server, directory, f"wheels-{note}")
        assert "model's sandbox" not in build["logs"]
        venvs.append(_rows(live_server, build["version"])[0])
    assert venvs[0] == venvs[1]


@pytest.fixture
def run_commands(settings: Settings) -> None:
    settings.build.allow_run_commands = True  # COGPORT_BUILD__ALLOW_RUN_COMMANDS, before the server starts


@pytest.mark.usefixtures("run_commands", "no_data_binds")
def test_build_commands_run_in_the_sandbox(
    live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COGPORT_ADMIN_TOKEN", ADMIN_TOKEN)
    data_dir = live_server.settings.data_dir
    commands = [
        "id -u > built-uid.txt",  # in the model directory: what commands change there is kept
        f"ls {data_dir} > data-dir.txt 2>&1 || true",
        "env > environ.txt",
    ]
    cog_yaml = COG_YAML.replace("build:\n", "build:\n  run:\n" + "".join(f"    - {json.dumps(c)}\n" for c in commands))
    directory = _model_dir(tmp_path, "build_local")
    (directory / "cog.yaml").write_text(cog_yaml)

    build = _push(live_server, directory, "commands")

    assert "(in the model's sandbox)" in build["logs"], build["logs"]
    venv, source, tenant = _rows(live_server, build["version"])
    assert (source / "built-uid.txt").read_text().strip() == str(UID_BASE + tenant if ROOT else os.geteuid())
    assert "cogport.db" not in (source / "data-dir.txt").read_text()
    environ = (source / "environ.txt").read_text()
    assert "COGPORT_" not in environ and ADMIN_TOKEN not in environ
    assert (_site_packages(venv) / "localpkg.py").is_file()  # the install ran in the sandbox too
    if ROOT:
        _assert_root_owned(venv)
        _assert_root_owned(source)

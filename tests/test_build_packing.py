"""What a push contains: ignore rules, the content id, and safe unpacking."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from cogport.build import packing
from cogport.build.errors import BuildError


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_ignore_files_and_defaults(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "cog.yaml": "",
            "predict.py": "",
            ".dockerignore": "weights/\n!weights/keep.bin\n",
            ".cogignore": "*.log\n/data.csv\n",
            "weights/big.bin": "x",
            "weights/keep.bin": "x",
            "run.log": "x",
            "data.csv": "x",
            "sub/data.csv": "x",
            ".git/config": "x",
            "__pycache__/predict.cpython-311.pyc": "x",
            ".cog/openapi_schema.json": "{}",
        },
    )
    assert packing.model_files(root) == [
        ".cogignore",
        ".dockerignore",
        "cog.yaml",
        "predict.py",
        "sub/data.csv",
        "weights/keep.bin",
    ]


def test_content_id_depends_on_paths_contents_and_sdk(tmp_path: Path) -> None:
    root = _tree(tmp_path / "a", {"cog.yaml": "x", "predict.py": "print(1)"})
    files = packing.model_files(root)
    base = packing.content_id(root, files, "0.23.1")
    assert len(base) == 64 and base == packing.content_id(root, files, "0.23.1")
    assert packing.content_id(root, files, "0.22.0") != base
    other = _tree(tmp_path / "b", {"cog.yaml": "x", "predict.py": "print(1)"})
    assert packing.content_id(other, packing.model_files(other), "0.23.1") == base  # where it lives does not count
    (other / "predict.py").write_text("print(2)")
    assert packing.content_id(other, packing.model_files(other), "0.23.1") != base
    (other / "predict.py").rename(other / "main.py")
    (other / "main.py").write_text("print(1)")
    assert packing.content_id(other, packing.model_files(other), "0.23.1") != base


def test_pack_and_unpack_round_trip(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src", {"cog.yaml": "x", "pkg/mod.py": "y", "ignored.pyc": "z"})
    archive = packing.pack_bytes(root, packing.model_files(root))
    dest = tmp_path / "dest"
    packing.unpack(io.BytesIO(archive), dest, max_bytes=1 << 20)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == ["cog.yaml", "pkg/mod.py"]


def _tar(members: list[tarfile.TarInfo], data: bytes = b"x") -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    buffer.seek(0)
    return buffer


def _file(name: str, size: int = 1) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([_file("../escape.py")], "unsafe path"),
        ([_file("/etc/passwd")], "unsafe path"),
        ([_link("link", "/etc/passwd")], "not a regular file"),
        ([_file("a", 10), _file("b", 10)], "larger than"),
    ],
)
def test_unsafe_archives_are_refused(tmp_path: Path, members: list[tarfile.TarInfo], message: str) -> None:
    archive = _tar(members, b"x" * 10)
    with pytest.raises(BuildError, match=message):
        packing.unpack(archive, tmp_path / "dest", max_bytes=15)
    assert not (tmp_path / "escape.py").exists()


def test_garbage_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="not a readable"):
        packing.unpack(io.BytesIO(b"definitely not a tarball"), tmp_path / "dest", max_bytes=100)

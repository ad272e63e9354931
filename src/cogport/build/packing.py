"""What a push contains: the files of a model directory after ignore rules, packed and unpacked safely.

The same rules run on both sides: the CLI leaves ignored files out of the upload, and the server applies
them again after unpacking, so the content id (:func:`content_id`) depends only on what is kept.
``.dockerignore`` and ``.cogignore`` use gitignore patterns (``pathspec``'s gitwildmatch), ``!`` included.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from cogport.build.errors import BuildError

if TYPE_CHECKING:
    import pathspec

IGNORE_FILES = (".dockerignore", ".cogignore")
ALWAYS_IGNORED = (".git/", ".hg/", ".svn/", ".cog/", "__pycache__/", "*.pyc", ".venv/", ".DS_Store")
"""Never part of a version: VCS data, caches, a local venv, and ``.cog/`` (cogport writes the schema there)."""
ID_SCHEME = b"cogport-version-1\0"
VERSION_SCHEME = "cogport-model-version-2"


def ignore_spec(root: Path) -> pathspec.GitIgnoreSpec:
    import pathspec  # here, not at the top: only a push or a build reads ignore rules, and the server's start is faster

    lines = list(ALWAYS_IGNORED)
    for name in IGNORE_FILES:
        path = root / name
        if path.is_file():
            lines.extend(path.read_text(encoding="utf-8", errors="replace").splitlines())
    return pathspec.GitIgnoreSpec.from_lines(lines)


def model_files(root: Path) -> list[str]:
    """The kept files under ``root``, as sorted POSIX paths relative to it. Symlinked files are followed."""
    spec = ignore_spec(root)
    can_prune = not any(pattern.include is False for pattern in spec.patterns)
    kept: list[str] = []
    for directory, dirnames, filenames in os.walk(root):
        rel_dir = Path(directory).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else f"{rel_dir}/"
        if can_prune:
            dirnames[:] = [d for d in dirnames if not spec.match_file(f"{prefix}{d}/")]
        else:
            dirnames[:] = [d for d in dirnames if d not in (".git", ".hg", ".svn", ".venv", "__pycache__")]
        for name in filenames:
            rel = f"{prefix}{name}"
            if spec.match_file(rel):
                continue
            path = Path(directory) / name
            if path.is_file():
                kept.append(rel)
    return sorted(kept)


def content_id(root: Path, files: Iterable[str], sdk_version: str) -> str:
    """The content id: sha256 over the SDK version and every kept file's path and content (64 hex).

    It keys the published source directory (shared by every model pushed the same files); the version id
    is :func:`version_id`, which adds the model.
    """
    digest = hashlib.sha256(ID_SCHEME)
    digest.update(f"sdk={sdk_version}\0".encode())
    for rel in sorted(files):
        file_digest = hashlib.sha256()
        with (root / rel).open("rb") as handle:
            while chunk := handle.read(1 << 20):
                file_digest.update(chunk)
        digest.update(rel.encode() + b"\0" + file_digest.digest())
    return digest.hexdigest()


def version_id(content: str, model_id: int, model_ref: str) -> str:
    """A version's id: sha256 over the model (its row id and ``owner/name``) and the content id (64 hex).

    The same files pushed twice to one model give one id (pushing is idempotent); pushed to two models
    they give two, so a bare version id names exactly one model.
    """
    return hashlib.sha256(f"{VERSION_SCHEME}\0model={model_id}:{model_ref}\0{content}".encode()).hexdigest()


def pack(root: Path, files: Iterable[str], out: BinaryIO) -> None:
    """Write ``files`` as a gzipped tar with neutral metadata (fast compression: uploads are local)."""
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        for rel in files:
            path = root / rel
            info = tar.gettarinfo(str(path), arcname=rel)
            if path.is_symlink():  # store the target's content, not the link
                info = tarfile.TarInfo(rel)
                info.size = path.stat().st_size
                info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755 if info.mode & 0o111 else 0o644
            with path.open("rb") as handle:
                tar.addfile(info, handle)


def pack_bytes(root: Path, files: Iterable[str]) -> bytes:
    buffer = io.BytesIO()
    pack(root, files, buffer)
    return buffer.getvalue()


def unpack(archive: BinaryIO, dest: Path, *, max_bytes: int, max_files: int = 100_000) -> None:
    """Extract a pushed archive into ``dest``: regular files and directories only, nothing outside ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    count = 0
    try:
        with tarfile.open(fileobj=archive, mode="r:*") as tar:
            members = []
            for member in tar:
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BuildError(f"the upload holds {member.name!r}, which is not a regular file")
                _check_name(member.name)
                count += 1
                total += member.size
                if count > max_files:
                    raise BuildError(f"the upload has more than {max_files} files")
                if total > max_bytes:
                    raise BuildError(f"the model directory is larger than {max_bytes // (1 << 20)} MiB unpacked")
                members.append(member)
            tar.extractall(dest, members=members, filter="data")
        readable(dest)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BuildError(f"the upload is not a readable .tar.gz archive: {exc}") from None


def readable(root: Path) -> None:
    """Modes as :func:`pack` writes them (directories 0755, files 0644 or 0755), ``root`` included: the
    sandbox runs a model as a uid of its own, which must be able to read its files (and nothing more)."""
    os.chmod(root, 0o755)
    for directory, dirs, filenames in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(directory, name), 0o755)
        for name in filenames:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.stat(path).st_mode & 0o111 else 0o644)


def _check_name(name: str) -> None:
    parts = Path(name).parts
    if name.startswith("/") or ".." in parts or not parts:
        raise BuildError(f"the upload holds an unsafe path {name!r}")


def remove_ignored(root: Path) -> list[str]:
    """Apply the ignore rules on the server side: delete ignored files, return the kept ones."""
    kept = set(model_files(root))
    for directory, _dirs, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = Path(directory) / name
            if path.relative_to(root).as_posix() not in kept:
                path.unlink()
        if Path(directory) != root and not any(Path(directory).iterdir()):
            Path(directory).rmdir()
    return sorted(kept)

"""Media types and file names as they may appear in a header, a URL or a storage key: stored types and
names come from uploads, fetched inputs and model outputs."""

from __future__ import annotations

import mimetypes
import posixpath
import re
from urllib.parse import quote

_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(\s*;\s*{_TOKEN}=({_TOKEN}|\"[^\"\\\x00-\x1f\x7f]*\"))*")
FALLBACK = "application/octet-stream"
NAME_MAX_BYTES = 200
"""The longest name (UTF-8) kept as a storage key's last part."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def media_type(value: str) -> str:
    """``value`` when it is a well-formed media type (RFC 9110), else ``application/octet-stream``: a
    header never carries what a client or a model sent unchecked."""
    value = value.strip()
    return value if len(value) <= 255 and _MEDIA_TYPE.fullmatch(value) else FALLBACK


_EXTENSIONS = {
    "audio/wav": ".wav",
    "audio/wave": ".wav",
    "audio/vnd.wave": ".wav",
    "audio/flac": ".flac",
    "audio/x-flac": ".flac",
    "audio/ogg": ".ogg",
    "audio/opus": ".opus",
    "audio/webm": ".weba",
    "audio/mp4": ".m4a",
    "image/webp": ".webp",
    "image/avif": ".avif",
    "video/webm": ".webm",
    "video/ogg": ".ogv",
}
"""Types common in model outputs that :mod:`mimetypes` names no extension for (Python 3.11)."""


def extension(content_type: str) -> str:
    """The usual file extension of a media type (``".wav"``), or ``""``: output names carry it, so that
    browsers and clients can tell an image or a sound from its URL."""
    base = content_type.split(";", 1)[0].strip().lower()
    return mimetypes.guess_extension(base) or _EXTENSIONS.get(base, "")


def content_disposition(name: str) -> str:
    """``Content-Disposition: inline`` naming ``name`` (control characters replaced; an ASCII fallback and
    the UTF-8 form)."""
    name = _CONTROL.sub("_", name)
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_").replace("\\", "_")
    return f"inline; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def safe_name(raw: str) -> str:
    """A file's basename, usable as the last part of a storage key and of a URL."""
    name = posixpath.basename(raw.replace("\\", "/").rstrip("/"))
    name = "".join("_" if ord(c) < 32 or c == "\x7f" else c for c in name).strip()
    if name in ("", ".", ".."):
        name = "file"
    if len(name.encode()) > NAME_MAX_BYTES:  # a file system's limit is 255 bytes, with room for a suffix
        stem, ext = posixpath.splitext(name)
        ext = ext[:20]
        budget = NAME_MAX_BYTES - len(ext.encode())
        name = stem.encode()[:budget].decode(errors="ignore") + ext
    return name

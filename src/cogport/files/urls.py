"""Every file URL cogport builds or recognises.

* ``{base}/v1/files/{id}``: an uploaded file's ``urls.get`` (JSON metadata; clients put it into inputs).
* ``{base}/v1/files/{id}/download[/{name}]?owner=&expiry=&signature=``: the bytes, for a signed URL.
* ``{base}/v1/files/outputs/{id}/{token}/{name}``: an output file, a capability URL (no auth needed).
* ``{internal}/internal/uploads/{token}/``: coglet's ``--upload-url``; it PUTs ``<that>/<basename>``.

``base`` is the public base URL (``public_url`` or the request's); ``internal`` is the loopback URL of
this server (:func:`internal_base_url`), used for what coglet instances on this machine fetch or send.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from cogport.settings import Settings

FILES_PATH = "/v1/files"
OUTPUTS_PATH = "/v1/files/outputs"
UPLOADS_PATH = "/internal/uploads"

_FILE_ID = re.compile(r"[0-9a-z]{1,32}")
_OUTPUT = re.compile(r"/v1/files/outputs/(?P<id>[0-9a-z]{1,32})/(?P<token>[A-Za-z0-9_-]{16,64})/[^/]+")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def internal_base_url(settings: Settings) -> str:
    """The URL coglet instances on this machine reach this server at (``internal_url``, else loopback)."""
    if settings.internal_url:
        return settings.internal_url.rstrip("/")
    host = settings.host
    if host in ("", "0.0.0.0", "127.0.0.1", "localhost"):
        host = "127.0.0.1"
    elif host in ("::", "::1"):
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def public_base_url(settings: Settings) -> str:
    """The base URL for URLs made outside a request (output files): ``public_url``, else the internal one."""
    return (settings.public_url or internal_base_url(settings)).rstrip("/")


def upload_url(settings: Settings, token: str) -> str:
    """What to pass as coglet's ``--upload-url`` for an instance holding ``token``."""
    return f"{internal_base_url(settings)}{UPLOADS_PATH}/{token}/"


def file_url(base_url: str, file_id: str) -> str:
    return f"{base_url}{FILES_PATH}/{file_id}"


def download_url(base_url: str, file_id: str, query: dict[str, str], name: str | None = None) -> str:
    """A signed download URL; with ``name`` the path ends in the file name (models see its extension)."""
    suffix = f"/{quote(name, safe='')}" if name else ""
    return f"{base_url}{FILES_PATH}/{file_id}/download{suffix}?{urlencode(query)}"


def output_url(base_url: str, file_id: str, token: str, name: str) -> str:
    return f"{base_url}{OUTPUTS_PATH}/{file_id}/{token}/{quote(name, safe='')}"


def known_bases(settings: Settings, *extra: str) -> list[str]:
    """The base URLs this server may be addressed by: ``extra`` (the request's), public, internal, loopback."""
    bases = [b.rstrip("/") for b in extra if b]
    if settings.public_url:
        bases.append(settings.public_url.rstrip("/"))
    bases.append(internal_base_url(settings))
    bases += [f"http://{host}:{settings.port}" for host in _LOOPBACK_HOSTS]
    return list(dict.fromkeys(b.lower() for b in bases))


def _own_path(url: str, bases: list[str] | None) -> str | None:
    """The path of ``url`` below one of ``bases`` (query and fragment dropped), or None; with ``bases``
    None, the path of any ``http(s)`` URL."""
    if bases is None:
        return urlsplit(url).path if url.startswith(("http://", "https://")) else None
    lowered = url.lower()
    for base in bases:
        if lowered.startswith(base + "/"):
            return urlsplit(url[len(base) :]).path
    return None


def own_file_id(url: str, bases: list[str] | None) -> str | None:
    """The id in an uploaded file's ``urls.get`` (``{base}/v1/files/{id}``) on one of ``bases``, or on
    any host when None (the id is then only a candidate: it names an upload when one has that id)."""
    path = _own_path(url, bases)
    if path is None or not path.startswith(FILES_PATH + "/"):
        return None
    rest = path[len(FILES_PATH) + 1 :].rstrip("/")
    return rest if _FILE_ID.fullmatch(rest) else None


def own_output(url: str, bases: list[str] | None = None) -> tuple[str, str] | None:
    """``(file_id, token)`` of an output capability URL; on one of ``bases``, or on any host when None."""
    path = _own_path(url, bases)
    if path is None:
        return None
    match = _OUTPUT.fullmatch(path)
    return (match["id"], match["token"]) if match else None


def rebase_outputs(value: Any, settings: Settings, base_url: str) -> Any:
    """``value`` (an output) with output file URLs made by :func:`public_base_url` without a ``public_url``
    (so on the internal base) moved onto ``base_url``, the request's. For presenting predictions; a no-op
    when ``public_url`` is set."""
    if settings.public_url:
        return value
    internal = internal_base_url(settings)
    if isinstance(value, str):
        return (
            base_url.rstrip("/") + value[len(internal) :] if value.startswith(internal + OUTPUTS_PATH + "/") else value
        )
    if isinstance(value, list):
        return [rebase_outputs(item, settings, base_url) for item in value]
    if isinstance(value, dict):
        return {key: rebase_outputs(item, settings, base_url) for key, item in value.items()}
    return value

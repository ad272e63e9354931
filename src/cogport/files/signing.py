"""The Files signing secret and the signed ``/v1/files/{id}/download`` URLs made with it.

The signature is Replicate's: the base64 HMAC-SHA256 of ``"{owner} {id} {expiry}"`` (``expiry`` a unix time).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from pathlib import Path

from cogport.identifiers import same_secret
from cogport.settings import Settings

KEY_FILE = Path("secrets") / "files_signing_key"

_lock = threading.Lock()
_keys: dict[tuple[str | None, Path], bytes] = {}


def signing_key(settings: Settings) -> bytes:
    """The signing key: the ``files_signing_secret`` setting, else a random key kept in the data dir.

    The generated key is created once (atomically, so processes sharing the data dir agree) and cached.
    """
    cache_key = (settings.files_signing_secret, settings.data_dir)
    with _lock:
        key = _keys.get(cache_key)
        if key is None:
            if settings.files_signing_secret:
                key = settings.files_signing_secret.encode()
            else:
                key = _load_or_create(settings.data_dir / KEY_FILE)
            _keys[cache_key] = key
        return key


def _load_or_create(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        try:
            os.link(tmp, path)  # fails if another process won the race: then its key is used
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return base64.b64decode(path.read_text().strip())


def derive(key: bytes, purpose: str) -> bytes:
    """A sub-key for ``purpose``, so one secret can serve unrelated signatures."""
    return hmac.new(key, purpose.encode(), hashlib.sha256).digest()


def download_signature(key: bytes, owner: str, file_id: str, expiry: int) -> str:
    digest = hmac.new(key, f"{owner} {file_id} {expiry}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def check_download(key: bytes, owner: str, file_id: str, expiry: int, signature: str) -> bool:
    """Whether ``signature`` is right for ``owner``/``file_id``/``expiry`` (expiry is checked separately)."""
    return same_secret(signature, download_signature(key, owner, file_id, expiry))


def download_query(key: bytes, owner: str, file_id: str, ttl: float) -> dict[str, str]:
    """The query parameters of a download URL valid for ``ttl`` seconds from now."""
    expiry = int(time.time() + ttl)
    return {"owner": owner, "expiry": str(expiry), "signature": download_signature(key, owner, file_id, expiry)}

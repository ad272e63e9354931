"""Capability tokens for coglet's ``--upload-url`` (the output upload receiver).

A token is ``<instance>.<mac>``: the MAC is an HMAC of the instance name under a key derived from the
Files signing secret, so any cogport process sharing that secret (or data dir) accepts tokens another
process issued. Revocation is local to the process that revokes (an instance that has stopped cannot
upload anyway); tokens issued here are also remembered, for :meth:`UploadTokens.active`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cogport.files.signing import derive
from cogport.identifiers import same_secret

_MAC_CHARS = 32


class UploadTokens:
    """The registry of upload tokens. Create one per app (``app.state.upload_tokens``)."""

    def __init__(self, key: bytes) -> None:
        self._key = derive(key, "cogport upload tokens v1")
        self._active: set[str] = set()
        self._revoked: set[str] = set()

    def issue(self, instance: str | None = None) -> str:
        """A new token for one coglet instance (``instance`` names it in logs; random when omitted).

        The runtime passes ``--upload-url {upload_url(settings, token)}`` to that instance and calls
        :meth:`revoke` when the instance stops.
        """
        name = instance or secrets.token_urlsafe(12)
        if not name or any(c not in _NAME_CHARS for c in name):
            raise ValueError("an instance name may only hold letters, digits, '-' and '_'")
        token = f"{name}.{self._mac(name)}"
        self._active.add(token)
        self._revoked.discard(token)
        return token

    def revoke(self, token: str) -> None:
        self._active.discard(token)
        self._revoked.add(token)

    def is_valid(self, token: str) -> bool:
        name, dot, mac = token.rpartition(".")
        if not dot or not name or token in self._revoked:
            return False
        return same_secret(mac, self._mac(name))

    def active(self) -> frozenset[str]:
        """The tokens this process issued and has not revoked."""
        return frozenset(self._active)

    def _mac(self, name: str) -> str:
        digest = hmac.new(self._key, name.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode()[:_MAC_CHARS]


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")

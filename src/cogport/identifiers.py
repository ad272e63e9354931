"""Identifiers and secrets: prediction ids, API tokens, webhook secrets, capability tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import string
import time

_BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford, lowercase
_TOKEN_ALPHABET = string.ascii_letters + string.digits


def new_object_id() -> str:
    """A 26-char lowercase, time-ordered id (48 bits of ms time + 82 random bits), like Replicate's."""
    value = (int(time.time() * 1000) << 82) | int.from_bytes(os.urandom(11), "big") >> 6
    chars = []
    for _ in range(26):
        chars.append(_BASE32[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_api_token() -> str:
    """A new API token in Replicate's shape: ``r8_`` + 37 alphanumerics (40 chars)."""
    return "r8_" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(37))


def hash_token(token: str) -> str:
    """Tokens are 220 random bits, so a plain SHA-256 is a safe, fast lookup key."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def new_capability() -> str:
    """An unguessable URL-safe token for capability URLs (streams, files)."""
    return secrets.token_urlsafe(24)


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of a secret (token, signature) as bytes: any text a caller sends, non-ASCII
    included, is just a wrong secret (``hmac.compare_digest`` refuses non-ASCII ``str``)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))

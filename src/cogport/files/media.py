"""Media types as they may appear in a header: stored types come from uploads and from model outputs."""

from __future__ import annotations

import re

_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(\s*;\s*{_TOKEN}=({_TOKEN}|\"[^\"\\\x00-\x1f\x7f]*\"))*")
FALLBACK = "application/octet-stream"


def media_type(value: str) -> str:
    """``value`` when it is a well-formed media type (RFC 9110), else ``application/octet-stream``: a
    header never carries what a client or a model sent unchecked."""
    value = value.strip()
    return value if len(value) <= 255 and _MEDIA_TYPE.fullmatch(value) else FALLBACK

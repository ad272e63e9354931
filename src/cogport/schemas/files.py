"""The File object of the Files API, as Replicate returns it.

Replicate's OpenAPI document leaves ``name`` and ``etag`` out, but real responses carry them and the
Python client requires both; ``checksums`` and ``urls`` must hold strings only.
"""

from __future__ import annotations

from typing import Any

from cogport.schemas.responses import Wire


class File(Wire):
    id: str
    name: str
    content_type: str
    size: int
    etag: str
    checksums: dict[str, str]
    metadata: dict[str, Any]
    created_at: str
    expires_at: str
    urls: dict[str, str]

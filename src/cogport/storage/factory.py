"""The storage the settings ask for: the local directory by default, an S3 bucket when
``COGPORT_STORAGE__URL`` is set (:mod:`cogport.storage.s3` is imported only then)."""

from __future__ import annotations

from cogport.settings import Settings
from cogport.storage.base import Storage
from cogport.storage.local import LocalStorage


async def open_storage(settings: Settings) -> Storage:
    """A storage for ``settings``; the caller closes it (``await storage.close()``)."""
    if settings.storage.url:
        from cogport.storage.s3 import S3Storage

        return await S3Storage.connect(settings.storage)
    return LocalStorage(settings.data_dir / "files")

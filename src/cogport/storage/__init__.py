"""Where files live: behind :class:`cogport.storage.base.Storage` (local directory now, S3 later)."""

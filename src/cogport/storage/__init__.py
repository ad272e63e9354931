"""Where files live: behind :class:`cogport.storage.base.Storage`, a local directory
(:mod:`cogport.storage.local`, the default) or an S3-compatible bucket (:mod:`cogport.storage.s3`), chosen
by :func:`cogport.storage.factory.open_storage`."""

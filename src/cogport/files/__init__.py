"""Files that are not rows: signing keys, signed download URLs, upload tokens, URL shapes, multipart uploads.

Key contracts:

* :func:`cogport.files.signing.signing_key` gives the one HMAC key of this data dir (or of the setting).
* :class:`cogport.files.tokens.UploadTokens` issues and checks the capability tokens of coglet's ``--upload-url``.
* :mod:`cogport.files.urls` is the only place that builds or recognises file URLs.
"""

__all__: list[str] = []

"""Files in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO), through aiobotocore.

Needs the ``cluster`` extra; imported only when ``COGPORT_STORAGE__URL`` is set, so the embedded default
never loads botocore. Keys live under the URL's prefix (``s3://bucket/prefix`` → ``prefix/<key>``),
addressed path style. Uploads stream in 8 MiB parts (a multipart upload once a body passes one part;
nothing holds a whole file), reads stream in 8 MiB ranges pinned to the first range's ``ETag`` (a file
replaced meanwhile fails instead of mixing two versions). botocore's errors are translated here: a missing
object is :class:`~cogport.errors.FileNotFound`, anything else :class:`~cogport.errors.StorageUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cogport.errors import FileNotFound, StorageUnavailable
from cogport.files.media import content_disposition
from cogport.settings import StorageSettings
from cogport.storage.base import check_key

PART_SIZE = 8 * 1024 * 1024
"""Multipart upload part size, and the span of one ranged read."""
MAX_COPY = 5 * 1024**3
"""The largest object ``CopyObject`` takes; larger copies stream through this process."""
MAX_PRESIGN_TTL = 7 * 24 * 3600
"""Signature V4 presigned URLs live at most a week."""
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


class S3Storage:
    def __init__(self, client: Any, bucket: str, prefix: str = "", context: Any = None) -> None:
        self.client: Any = client
        """An aiobotocore S3 client (untyped: aiobotocore has no stubs)."""
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._context: Any = context

    @classmethod
    async def connect(cls, settings: StorageSettings) -> S3Storage:
        """A client for ``settings`` (credentials from botocore's default chain), checked against the bucket."""
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"max_attempts": 3, "mode": "standard"},
            # S3-compatible services differ in the optional checksums they accept: only where required.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        context = get_session().create_client(
            "s3", region_name=settings.region, endpoint_url=settings.endpoint_url or None, config=config
        )
        client = await context.__aenter__()
        storage = cls(client, settings.bucket, settings.prefix, context)
        try:
            await storage._call("head_bucket", Bucket=storage.bucket)
        except BaseException as exc:
            await storage.close()
            raise StorageUnavailable(f"The bucket {storage.bucket!r} cannot be reached: {exc}") from exc
        return storage

    async def close(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            await context.__aexit__(None, None, None)

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _call(self, operation: str, **params: Any) -> Any:
        """``client.<operation>(**params)`` with botocore's errors translated."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await getattr(self.client, operation)(**params)
        except (BotoCoreError, ClientError) as exc:
            raise _translated(exc, operation) from exc

    async def put(self, key: str, data: bytes) -> None:
        await self._call("put_object", Bucket=self.bucket, Key=self._key(key), Body=data)

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        name = self._key(key)
        buffer = bytearray()
        size = 0
        upload: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                if len(buffer) >= PART_SIZE:
                    if upload is None:
                        created = await self._call("create_multipart_upload", Bucket=self.bucket, Key=name)
                        upload = str(created["UploadId"])
                    parts.append(await self._part(name, upload, len(parts) + 1, bytes(buffer)))
                    buffer.clear()
            if upload is None:
                await self._call("put_object", Bucket=self.bucket, Key=name, Body=bytes(buffer))
                return size
            if buffer or not parts:
                parts.append(await self._part(name, upload, len(parts) + 1, bytes(buffer)))
            await self._call(
                "complete_multipart_upload",
                Bucket=self.bucket,
                Key=name,
                UploadId=upload,
                MultipartUpload={"Parts": parts},
            )
            return size
        except BaseException:
            if upload is not None:
                with contextlib.suppress(Exception):
                    await self._call("abort_multipart_upload", Bucket=self.bucket, Key=name, UploadId=upload)
            raise

    async def _part(self, name: str, upload: str, number: int, data: bytes) -> dict[str, Any]:
        sent = await self._call(
            "upload_part", Bucket=self.bucket, Key=name, UploadId=upload, PartNumber=number, Body=data
        )
        return {"PartNumber": number, "ETag": sent["ETag"]}

    async def get(self, key: str) -> bytes:
        response = await self._call("get_object", Bucket=self.bucket, Key=self._key(key))
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def open_chunks(self, key: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        name = self._key(key)
        start, total = 0, 1
        etag: str | None = None
        while start < total:
            params: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": name,
                "Range": f"bytes={start}-{start + PART_SIZE - 1}",
            }
            if etag is not None:
                params["IfMatch"] = etag
            try:
                response = await self.client.get_object(**params)
            except (BotoCoreError, ClientError) as exc:
                if start == 0 and _code(exc) == "InvalidRange":
                    return  # an empty object: no range of it is satisfiable
                raise _translated(exc, "get_object") from exc
            etag = response.get("ETag")
            content_range = response.get("ContentRange")
            if content_range:
                total = int(str(content_range).rsplit("/", 1)[1])
            else:  # the whole object (a server that ignores Range)
                total = start + int(response["ContentLength"])
            async with response["Body"] as body:
                async for chunk in body.iter_chunks(chunk_size):
                    start += len(chunk)
                    yield chunk
            if not content_range:
                return

    async def exists(self, key: str) -> bool:
        try:
            await self._call("head_object", Bucket=self.bucket, Key=self._key(key))
        except FileNotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        await self._call("delete_object", Bucket=self.bucket, Key=self._key(key))

    async def delete_prefix(self, prefix: str) -> None:
        name = self._key(prefix)
        keys = [name]
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{name}/"):
            keys.extend(str(item["Key"]) for item in page.get("Contents", []))
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            await self._call("delete_objects", Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    async def copy(self, source: str, key: str) -> None:
        head = await self._call("head_object", Bucket=self.bucket, Key=self._key(source))
        if int(head["ContentLength"]) <= MAX_COPY:
            await self._call(
                "copy_object",
                Bucket=self.bucket,
                Key=self._key(key),
                CopySource={"Bucket": self.bucket, "Key": self._key(source)},
            )
        else:
            await self.put_stream(key, self.open_chunks(source, 1024 * 1024))

    async def download_to(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with temporary.open("wb") as handle:
                async for chunk in self.open_chunks(key, 1024 * 1024):
                    await asyncio.to_thread(handle.write, chunk)
            temporary.replace(path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    async def presign(
        self, key: str, ttl: float, *, filename: str | None = None, content_type: str | None = None
    ) -> str | None:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        if content_type:
            params["ResponseContentType"] = content_type
        expires = max(1, min(int(ttl), MAX_PRESIGN_TTL))
        url: str = await self._call(
            "generate_presigned_url", ClientMethod="get_object", Params=params, ExpiresIn=expires
        )
        return url


def _code(exc: Exception) -> str:
    """The S3 error code of a ``ClientError`` (``""`` for other errors)."""
    response: Any = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _translated(exc: Exception, operation: str) -> Exception:
    """Our error for a botocore one: a missing object or ``StorageUnavailable``."""
    code = _code(exc)
    if code in _MISSING:
        return FileNotFound()
    if code:
        return StorageUnavailable(f"Storage refused {operation}: {code}")
    return StorageUnavailable(f"Storage cannot be reached: {exc}")

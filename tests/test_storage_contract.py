"""The Storage protocol, run against both backends: the local directory and S3 (a real SeaweedFS)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cogport.errors import FileNotFound
from cogport.storage.base import Storage
from cogport.storage.local import LocalStorage
from cogport.storage.s3 import PART_SIZE, S3Storage
from tests.support.seaweed import Seaweed, seaweed  # noqa: F401 - the fixture

MIB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "files")
        return
    server: Seaweed = request.getfixturevalue("seaweed")
    s3 = await S3Storage.connect(server.storage_settings())
    try:
        yield s3
    finally:
        await s3.close()


async def chunks_of(data: bytes, size: int = MIB) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def test_put_get_exists_delete(storage: Storage) -> None:
    assert not await storage.exists("uploads/a/content")
    await storage.put("uploads/a/content", b"hello")
    assert await storage.exists("uploads/a/content")
    assert await storage.get("uploads/a/content") == b"hello"
    await storage.put("uploads/a/content", b"replaced")
    assert await storage.get("uploads/a/content") == b"replaced"
    await storage.delete("uploads/a/content")
    assert not await storage.exists("uploads/a/content")
    await storage.delete("uploads/a/content")  # deleting what is not there is fine
    with pytest.raises(FileNotFound):
        await storage.get("uploads/a/content")
    with pytest.raises(FileNotFound):
        await collect(storage.open_chunks("uploads/missing/content"))


async def test_put_stream_of_several_parts(storage: Storage) -> None:
    """More than one 8 MiB part: streamed (a multipart upload on S3), read back whole and in chunks."""
    data = os.urandom(2 * PART_SIZE + 12345)
    assert await storage.put_stream("outputs/big/blob.bin", chunks_of(data)) == len(data)
    assert hashlib.sha256(await storage.get("outputs/big/blob.bin")).digest() == hashlib.sha256(data).digest()
    pieces = [chunk async for chunk in storage.open_chunks("outputs/big/blob.bin", 1 << 20)]
    assert b"".join(pieces) == data
    assert max(len(piece) for piece in pieces) <= 1 << 20
    if isinstance(storage, S3Storage):
        head = await storage.client.head_object(Bucket=storage.bucket, Key=f"{storage.prefix}/outputs/big/blob.bin")
        assert head["ContentLength"] == len(data)
        assert head["ETag"].strip('"').endswith("-3")  # three parts


async def test_small_and_empty_streams(storage: Storage) -> None:
    assert await storage.put_stream("inputs/s/a.txt", chunks_of(b"abc")) == 3
    assert await collect(storage.open_chunks("inputs/s/a.txt")) == b"abc"
    assert await storage.put_stream("inputs/e/empty", chunks_of(b"")) == 0
    assert await storage.exists("inputs/e/empty")
    assert await storage.get("inputs/e/empty") == b""
    assert await collect(storage.open_chunks("inputs/e/empty")) == b""


async def test_a_failed_stream_leaves_nothing(storage: Storage) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield os.urandom(PART_SIZE + 1)  # one part sent already (S3)
        raise RuntimeError("the client went away")

    with pytest.raises(RuntimeError):
        await storage.put_stream("uploads/f/content", failing())
    assert not await storage.exists("uploads/f/content")
    if isinstance(storage, S3Storage):
        pending = await storage.client.list_multipart_uploads(Bucket=storage.bucket, Prefix=storage.prefix)
        assert not pending.get("Uploads")


async def test_delete_prefix_removes_the_folder_only(storage: Storage) -> None:
    for key in ("outputs/x/one.png", "outputs/x/sub/two.png", "outputs/xy/three.png", "outputs/x"):
        if key != "outputs/x":
            await storage.put(key, b"1")
    await storage.delete_prefix("outputs/x")
    assert not await storage.exists("outputs/x/one.png")
    assert not await storage.exists("outputs/x/sub/two.png")
    assert await storage.exists("outputs/xy/three.png")  # a sibling sharing the prefix's letters stays
    await storage.delete_prefix("outputs/nothing-here")


async def test_copy(storage: Storage) -> None:
    await storage.put("outputs/c/weights.tar", b"weights")
    await storage.copy("outputs/c/weights.tar", "weights/v1/weights.tar")
    await storage.delete_prefix("outputs/c")
    assert await storage.get("weights/v1/weights.tar") == b"weights"
    with pytest.raises(FileNotFound):
        await storage.copy("outputs/c/weights.tar", "weights/v2/weights.tar")


async def test_download_to(storage: Storage, tmp_path: Path) -> None:
    data = os.urandom(PART_SIZE + 99)
    await storage.put_stream("weights/v/model.safetensors", chunks_of(data))
    target = tmp_path / "cache" / "abc" / "model.safetensors"
    await storage.download_to("weights/v/model.safetensors", target)
    assert target.read_bytes() == data
    assert os.listdir(target.parent) == ["model.safetensors"]  # no temporary file left
    with pytest.raises(FileNotFound):
        await storage.download_to("weights/none/model", tmp_path / "cache" / "none" / "model")
    assert not (tmp_path / "cache" / "none").exists() or os.listdir(tmp_path / "cache" / "none") == []


async def test_presign(storage: Storage) -> None:
    await storage.put("uploads/p/photo.jpg", b"\xff\xd8 jpeg bytes")
    url = await storage.presign("uploads/p/photo.jpg", 60, filename="my photo.jpg", content_type="image/jpeg")
    if isinstance(storage, LocalStorage):
        assert url is None  # served by cogport itself
        return
    assert url is not None
    assert url.split("?")[0].endswith("/uploads/p/photo.jpg")  # the name a downloader keeps
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
        assert response.status_code == 200
        assert response.content == b"\xff\xd8 jpeg bytes"
        assert response.headers["content-type"] == "image/jpeg"
        assert "my%20photo.jpg" in response.headers["content-disposition"]
        tampered = await client.get(url.replace("photo.jpg", "other.jpg", 1))
        assert tampered.status_code == 403


@pytest.mark.parametrize("key", ["", "a//b", "../x", "a/../b", "a/./b", "/abs"])
async def test_bad_keys_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(ValueError):
        await storage.put(key, b"x")


async def test_s3_prefix_and_bucket_layout(seaweed: Seaweed) -> None:  # noqa: F811 - the fixture
    settings = seaweed.storage_settings()
    s3 = await S3Storage.connect(settings)
    try:
        await s3.put("uploads/id/content", b"x")
        async with seaweed.client() as client:
            listed: Any = await client.list_objects_v2(Bucket=seaweed.bucket, Prefix=settings.prefix + "/")
        assert [item["Key"] for item in listed["Contents"]] == [f"{settings.prefix}/uploads/id/content"]
    finally:
        await s3.close()

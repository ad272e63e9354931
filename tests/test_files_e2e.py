"""Files end to end over HTTPS, the way the official clients see them.

The clients wrap only ``https:`` output URLs in ``FileOutput``, so the server here serves TLS with a
self-signed certificate made for the test (``public_url`` is the https URL; coglet instances use a plain
loopback listener, ``internal_url``, as behind a TLS-terminating proxy). The Python client trusts the
certificate through ``SSL_CERT_FILE``, node through ``NODE_EXTRA_CA_CERTS``.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from replicate.helpers import FileOutput

from cogport.settings import Settings
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.models import push, push_fixture
from tests.support.pushing import EXAMPLES, shared_build_dirs, shared_venvs  # noqa: F401 - fixtures
from tests.support.servers import running
from tests.test_files_js import _installed

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def png(width: int, height: int) -> bytes:
    """A small RGB PNG (a colour gradient), written by hand."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 40 % 256, y * 60 % 256, 128)) for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    result = subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"openssl could not make a certificate: {result.stderr[-300:]}")
    return cert, key


@pytest.fixture
def https_server(
    shared_build_dirs: Settings,  # noqa: F811 - the fixture
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LiveServer]:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    with running(shared_build_dirs, tls=certificate) as server:
        yield server


@pytest.fixture
def image_version(https_server: LiveServer) -> str:
    return push(https_server, EXAMPLES / "image", "image")


@pytest.fixture
def client(https_server: LiveServer) -> Iterator[Any]:
    import replicate

    client = replicate.Client(api_token=ADMIN_TOKEN, base_url=https_server.url)
    client.poll_interval = 0.05
    yield client
    # Close its keep-alive connection before the server stops: a TLS server otherwise waits for the
    # client's close_notify (asyncio's 30 s SSL shutdown timeout).
    if client._Client__client is not None:
        client._Client__client.close()


def test_python_client_uploads_input_and_reads_file_output(
    https_server: LiveServer, image_version: str, client: Any, tmp_path: Path
) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(png(8, 6))
    with source.open("rb") as handle:
        output = client.run(f"admin/image:{image_version}", input={"image": handle, "width": 4})
    assert isinstance(output, FileOutput)
    assert urlsplit(output.url).path.startswith("/v1/files/outputs/")
    assert output.url.startswith(https_server.url)
    data = output.read()
    assert png_size(data) == (4, 3)

    # The same bytes with the owner's bearer header, with none (the JS client's FileOutput) and with a
    # token the server does not know (the URL is the capability; the header is ignored).
    for headers in (AUTH, {}, {"Authorization": "Bearer r8_not_a_token"}):
        response = httpx.get(output.url, headers=headers)
        assert response.status_code == 200, (headers, response.text)
        assert response.content == data
        assert response.headers["content-type"] == "image/png"

    # A pathlib.Path input is uploaded too; the prediction's input holds this server's file URL.
    prediction = client.predictions.create(
        version=image_version, input={"image": source, "effect": "invert"}, use_file_output=True
    )
    prediction.wait()
    assert prediction.status == "succeeded", prediction.error
    assert prediction.input["image"].startswith(f"{https_server.url}/v1/files/")
    uploaded = httpx.get(prediction.input["image"], headers=AUTH).json()
    assert uploaded["name"] == "in.png" and uploaded["size"] == source.stat().st_size
    inverted = httpx.get(prediction.output).content
    assert png_size(inverted) == (8, 6) and inverted != data


def test_python_client_streams_file_outputs_as_file_output(
    https_server: LiveServer, client: Any, tmp_path: Path
) -> None:
    version = push_fixture(https_server, tmp_path, "file_tokens")
    events = list(client.stream(f"admin/file-tokens:{version}", input={"count": 2}))
    files = [e.data for e in events if e.event.value == "output"]
    assert all(isinstance(f, FileOutput) for f in files)
    assert [f.read() for f in files] == [b"file 0", b"file 1"]
    assert all(urlsplit(f.url).path.startswith("/v1/files/outputs/") for f in files)


JS_RUN = r"""
const fs = require("fs");
const Replicate = require("replicate");
const [baseUrl, auth, ref, imagePath] = process.argv.slice(2);
const replicate = new Replicate({ auth, baseUrl });
(async () => {
  const image = fs.readFileSync(imagePath);
  const output = await replicate.run(ref, { input: { image, width: 2 } });
  const bytes = Buffer.from(await output.blob().then((b) => b.arrayBuffer()));
  const url = output.url().toString();
  const isFileOutput = typeof output.blob === "function";
  console.log(JSON.stringify({ url, bytes: bytes.toString("base64"), isFileOutput }));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_js_client_uploads_input_and_reads_file_output(
    https_server: LiveServer, image_version: str, certificate: tuple[Path, Path]
) -> None:
    cache = _installed()
    script = cache / "files_e2e_test.js"
    script.write_text(JS_RUN)
    source = cache.parent / f"cogport-js-input-{os.getpid()}.png"
    image = png(6, 4)
    source.write_bytes(image)
    try:
        result = subprocess.run(
            ["node", str(script), f"{https_server.url}/v1", ADMIN_TOKEN, f"admin/image:{image_version}", str(source)],
            cwd=cache,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "NODE_EXTRA_CA_CERTS": str(certificate[0])},
        )
    finally:
        source.unlink(missing_ok=True)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["isFileOutput"]
    assert out["url"].startswith(f"{https_server.url}/v1/files/outputs/")
    data = base64.b64decode(out["bytes"])
    assert png_size(data) == (2, 1)
    assert httpx.get(out["url"]).content == data
    # The JS client uploaded its Buffer through POST /v1/files (default strategy) rather than a data URL.
    files = httpx.get(f"{https_server.url}/v1/files", headers=AUTH).json()["results"]
    assert any(f["size"] == len(image) for f in files)
    predictions = httpx.get(f"{https_server.url}/v1/predictions", headers=AUTH).json()["results"]
    assert predictions[0]["input"]["image"].startswith(f"{https_server.url}/v1/files/")


def test_deleting_a_version_removes_its_output_files(
    https_server: LiveServer, image_version: str, client: Any, tmp_path: Path
) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(png(4, 4))
    prediction = client.predictions.create(version=image_version, input={"image": source})
    prediction.wait()
    assert prediction.status == "succeeded", prediction.error
    url = prediction.output
    assert httpx.get(url).status_code == 200
    files_dir = https_server.settings.data_dir / "files"
    before = sorted(p for p in files_dir.rglob("*") if p.is_file())

    deleted = httpx.delete(f"{https_server.url}/v1/models/admin/image/versions/{image_version}", headers=AUTH)
    assert deleted.status_code == 202
    prediction_url = f"{https_server.url}/v1/predictions/{prediction.id}"
    deadline = time.monotonic() + 30
    while httpx.get(prediction_url, headers=AUTH).status_code != 404:  # the Janitor has committed
        assert time.monotonic() < deadline, "the prediction outlived its version"
        time.sleep(0.1)
    assert httpx.get(url).status_code == 404
    after = sorted(p for p in files_dir.rglob("*") if p.is_file())
    assert len(after) < len(before)

"""Patterns of real Cog models (issue 18's findings 4 and 5), each as a small fixture model in
``tests/fixtures/models`` pushed into a live server and run through the API, as a model author would.

Every model runs sandboxed (the suite's default): as its own uid, with its source as an overlay and the
network only through the egress proxy and cogport's gateway.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cogport.runtime.gateway import EgressPolicy, Gateway
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support import predictions
from tests.support.models import FIXTURES, push
from tests.support.pushing import (  # noqa: F401 - fixtures
    create_model,
    push_dir,
    shared_build_dirs,
    shared_venvs,
)

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def run(server: LiveServer, version: str, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """A prediction, waited for (``Prefer: wait``, then polled)."""
    created = predictions.create(server, version, inputs or {}, headers={"Prefer": "wait=60"})
    return predictions.wait_for(server, created["id"], {"succeeded", "failed", "canceled"})


def download(url: str) -> bytes:
    response = httpx.get(url, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.content


def failed_build(server: LiveServer, name: str) -> dict[str, Any]:
    create_model(server.url, ADMIN_TOKEN, "admin", name)

    async def go() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as client:
            return await push_dir(client, FIXTURES / name, f"admin/{name}")

    build = asyncio.run(go())
    assert build["status"] == "failed", build
    return build


def test_output_written_to_the_working_directory(live_server: LiveServer) -> None:
    """``open("out.png", "wb")`` in the working directory works, as in Replicate's /src."""
    version = push(live_server, FIXTURES / "cwd_output", "cwd-output")
    first = run(live_server, version, {"shade": 10})
    assert first["status"] == "succeeded", (first["error"], first["logs"])
    image = download(first["output"])
    assert image.startswith(b"\x89PNG") and first["output"].endswith(".png")
    second = run(live_server, version, {"shade": 200})  # the file is there from the first: overwritten
    assert second["status"] == "succeeded", second["error"]
    assert download(second["output"]) != image


def test_ffmpeg_from_a_wheel(live_server: LiveServer) -> None:
    """A model that calls ``ffmpeg`` with no system package: imageio-ffmpeg's static binary runs in the sandbox."""
    version = push(live_server, FIXTURES / "ffmpeg_tone", "ffmpeg-tone")
    done = run(live_server, version, {"seconds": 0.25})
    assert done["status"] == "succeeded", (done["error"], done["logs"])
    wav = download(done["output"])
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    assert len(wav) > 0.2 * 8000 * 2  # a quarter second of 16-bit mono at 8 kHz


def test_missing_shared_library_is_named(live_server: LiveServer) -> None:
    """A program that exits 127 because a shared library is missing: the loader's line reaches the
    prediction's logs and its error, not only the server's log."""
    version = push(live_server, FIXTURES / "missing_library", "missing-library")
    failed = run(live_server, version)
    assert failed["status"] == "failed"
    loader = "error while loading shared libraries: libQ.so.6: cannot open shared object file"
    assert "exit status 127" in failed["error"]
    assert loader in failed["error"], failed["error"]
    assert loader in failed["logs"], failed["logs"]
    # The model may also carry on: the program's status is its own business then.
    passed = run(live_server, version, {"check": False})
    assert passed["status"] == "succeeded" and passed["output"] == "exit status 127"


def test_pkg_resources_on_python_3_11(live_server: LiveServer) -> None:
    """``import pkg_resources`` works on Python 3.11 without asking for setuptools, as in Docker's python
    images up to 3.11 (librosa 0.10 and older import it)."""
    version = push(live_server, FIXTURES / "pkg_resources_user", "pkg-resources-user")
    done = run(live_server, version)
    assert done["status"] == "succeeded", (done["error"], done["logs"])
    assert done["output"] == live_server.settings.build.cog_version


def test_path_default_for_a_str_input_names_the_input_and_the_fix(live_server: LiveServer) -> None:
    build = failed_build(live_server, "path_default")
    error = build["error"]
    assert "failed to normalize value" not in error
    assert "'filepath'" in error and "Path('/src/inputs/default.png')" in error
    assert "str" in error and 'filepath: str = "/src/inputs/default.png"' in error
    assert error in build["logs"]


def finish_training(server: LiveServer, training_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = httpx.get(f"{server.url}/v1/trainings/{training_id}", headers=AUTH).json()
        if body["status"] in ("succeeded", "failed", "canceled"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_hello_train_reads_its_weights_with_requests(live_server: LiveServer) -> None:
    """Replicate's hello-train: train writes weights; the trained version's ``setup(weights)`` gets a URL
    and fetches it with ``requests.get`` (from inside the sandbox)."""
    base = push(live_server, FIXTURES / "hello_train", "hello-train")
    untrained = run(live_server, base, {"text": "bob"})
    assert untrained["status"] == "succeeded" and untrained["output"] == "hello bob"

    create_model(live_server.url, ADMIN_TOKEN, "admin", "hello-trained")
    response = httpx.post(
        f"{live_server.url}/v1/models/admin/hello-train/versions/{base}/trainings",
        json={"destination": "admin/hello-trained", "input": {"prefix": "ahoy"}},
        headers=AUTH,
    )
    assert response.status_code == 201, response.text
    training = finish_training(live_server, response.json()["id"])
    assert training["status"] == "succeeded", (training["error"], training["logs"])
    trained = training["output"]["version"].partition(":")[2]

    done = run(live_server, trained, {"text": "bob"})
    assert done["status"] == "succeeded", (done["error"], done["logs"])
    assert done["output"] == "ahoy bob"  # requests.get of a path would have failed setup: "No scheme supplied"


async def test_gateway_serves_the_weights_whole_and_in_ranges(tmp_path: Path) -> None:
    """What ``COG_WEIGHTS`` names inside a sandbox: the instance's own weights, whole, by byte range (parallel
    downloaders such as pget) or HEAD; nothing else under that path."""
    weights = tmp_path / "trained model.tar"
    weights.write_bytes(bytes(range(256)) * 1000)
    gateway = Gateway(tmp_path / "sockets", EgressPolicy.parse("none"), "http://127.0.0.1:1", weights=weights)
    gateway.directory.mkdir()
    await gateway.start()
    try:
        assert gateway.weights_path == "/internal/weights/trained%20model.tar"
        transport = httpx.AsyncHTTPTransport(uds=str(gateway.gateway_socket))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            whole = await client.get(gateway.weights_path)
            assert whole.status_code == 200 and whole.content == weights.read_bytes()
            assert whole.headers["accept-ranges"] == "bytes"
            part = await client.get(gateway.weights_path, headers={"Range": "bytes=1000-1999"})
            assert part.status_code == 206 and part.content == weights.read_bytes()[1000:2000]
            assert part.headers["content-range"] == "bytes 1000-1999/256000"
            tail = await client.get(gateway.weights_path, headers={"Range": "bytes=-10"})
            assert tail.status_code == 206 and tail.content == weights.read_bytes()[-10:]
            head = await client.head(gateway.weights_path)
            assert head.status_code == 200 and head.headers["content-length"] == "256000"
            beyond = await client.get(gateway.weights_path, headers={"Range": "bytes=256000-"})
            assert beyond.status_code == 416
            other = await client.get("/internal/weights/other.tar")
            assert other.status_code == 403
    finally:
        await gateway.close()


def test_readme_lists_every_fixture() -> None:
    readme = (FIXTURES / "README.md").read_text()
    for name in ("cwd_output", "ffmpeg_tone", "missing_library", "pkg_resources_user", "path_default", "hello_train"):
        assert f"| {name} |" in readme, name

"""replicate 1.1's ``use()``: models as functions (sync, async, streaming), file outputs as URLPath, file inputs.

Run by tests/test_clients_py_replicate.py in a venv of its own, with ``REPLICATE_BASE_URL`` and
``REPLICATE_API_TOKEN`` set; argv[1] is a JSON object of the pushed version ids. Prints one JSON line.
"""

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import connections  # records the ports this process connects to, from here on
import replicate
from replicate.exceptions import ModelError
from replicate.use import URLPath, get_path_url


def describe(path: Any) -> dict[str, Any]:
    """A file output: its type, remote URL, and the bytes it reads back (downloaded on first use)."""
    return {"type": type(path).__name__, "url": get_path_url(path), "text": Path(os.fspath(path)).read_text()}


def by_function(versions: dict[str, str], out: dict[str, Any]) -> None:
    hello = replicate.use("admin/hello-world")
    out["hello"] = hello(text="world")
    out["hello_pinned"] = replicate.use(f"admin/hello-world:{versions['hello']}")(text="pinned")
    run = hello.create(text="later")
    out["run"] = {"output": run.output(), "logs": run.logs(), "id": run._prediction.id}

    streaming = replicate.use("admin/streaming", streaming=True)
    out["tokens"] = list(streaming(prompt="one two three", delay=0.01))
    out["concatenated"] = replicate.use("admin/streaming")(prompt="said twice", repeat=2)


def files(tmp: Path, out: dict[str, Any]) -> None:
    listed = replicate.use("admin/file-list")(count=2)
    out["file_list"] = [describe(p) for p in listed]
    streamed = replicate.use("admin/file-tokens", streaming=True)(count=2)
    out["file_tokens"] = [describe(p) for p in streamed]

    digest = replicate.use("admin/file-digest")
    local = tmp / "local.txt"
    local.write_bytes(b"uploaded by use()")
    out["digest_local"] = digest(file=local)  # a local Path: uploaded through the Files API, its URL sent
    out["digest_chained"] = digest(file=listed[1])  # a URLPath output: its URL passed on as it is
    out["chained_is_urlpath"] = isinstance(listed[1], URLPath)

    picture = tmp / "in.png"
    picture.write_bytes(bytes.fromhex(sys.argv[3]))
    image = replicate.use("admin/image")(image=picture, effect="invert")  # one Path out: one URLPath
    data = Path(os.fspath(image)).read_bytes()
    out["image"] = {"type": type(image).__name__, "url": get_path_url(image), "data": data.hex()}


def failure(out: dict[str, Any]) -> None:
    tokens = replicate.use("admin/tokens")
    run = tokens.create(count=2, fail="the model gave up")
    try:
        run.output()
    except ModelError as error:
        out["failure"] = {"error": error.prediction.error, "status": error.prediction.status}
    out["failure_logs"] = run.logs()


async def asynchronous(out: dict[str, Any]) -> None:
    hello = replicate.use("admin/hello-world", use_async=True)
    out["async_hello"] = await hello(text="async")
    streaming = replicate.use("admin/streaming", streaming=True, use_async=True)
    iterator = await streaming(prompt="async tokens here")
    out["async_tokens"] = [token async for token in iterator]


def main() -> None:
    versions = json.loads(sys.argv[1])
    tmp = Path(sys.argv[2])
    out: dict[str, Any] = {}
    by_function(versions, out)
    files(tmp, out)
    failure(out)
    asyncio.run(asynchronous(out))
    out["ports"] = connections.ports()
    print(json.dumps(out))


if __name__ == "__main__":
    main()

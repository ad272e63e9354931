"""The official JavaScript client (npm ``replicate@1.4.0``) against a live server: files.create/get/list/delete.

It sends ``metadata`` as a Blob part (``blob``, ``application/json``) and names buffers ``buffer_<ms>``.
The package is installed by the test set-up (tests/support/npm.py), cached in the temp dir across runs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support import npm

PACKAGE = "replicate@1.4.0"

SCRIPT = r"""
const Replicate = require("replicate");
const [baseUrl, auth] = process.argv.slice(2);
const replicate = new Replicate({ auth, baseUrl });
(async () => {
  const fromBuffer = await replicate.files.create(Buffer.from("hello from js"), { via: "buffer" });
  const named = new File([new Uint8Array([1, 2, 3])], "tiny.bin", { type: "application/x-tiny" });
  const fromFile = await replicate.files.create(named);
  const got = await replicate.files.get(fromBuffer.id);
  const listed = [];
  for await (const page of replicate.paginate(replicate.files.list)) listed.push(...page.map((f) => f.id));
  await replicate.files.delete(fromFile.id);
  let gone = null;
  try { await replicate.files.get(fromFile.id); } catch (e) { gone = e.response.status; }
  console.log(JSON.stringify({ fromBuffer, fromFile, got, listed, gone }));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def _installed() -> Path:
    """The cached install of ``replicate@1.4.0`` (tests/support/npm.py); other JS tests import it from here."""
    return npm.installed(PACKAGE)


def test_js_client_files(live_server: LiveServer) -> None:
    cache = _installed()
    script = cache / "files_test.js"
    script.write_text(SCRIPT)
    result = subprocess.run(
        ["node", str(script), f"{live_server.url}/v1", ADMIN_TOKEN],
        cwd=cache,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    buffer_file = out["fromBuffer"]
    assert buffer_file["name"].startswith("buffer_")
    assert buffer_file["content_type"] == "application/octet-stream"
    assert buffer_file["size"] == len("hello from js")
    assert buffer_file["metadata"] == {"via": "buffer"}
    assert out["fromFile"]["name"] == "tiny.bin"
    assert out["fromFile"]["content_type"] == "application/x-tiny"
    assert out["fromFile"]["metadata"] == {}
    assert out["got"] == buffer_file
    assert out["listed"] == [out["fromFile"]["id"], buffer_file["id"]]
    assert out["gone"] == 404

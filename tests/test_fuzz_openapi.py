"""Fuzzing: schemathesis over cogport's own OpenAPI document and over Replicate's, every operation, against a
live server with a real admin token and a real model pushed; the bar is no server error (5xx) at all.
Bounded: ``COGPORT_FUZZ_EXAMPLES`` generated cases per operation (default 8), no shrinking, no database."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.models import push_fixture
from tests.support.openapi import SPEC_PATH
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
EXAMPLES = int(os.environ.get("COGPORT_FUZZ_EXAMPLES", "8"))
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def fuzz(document: dict[str, Any], base_url: str, base_path: str = "") -> list[str]:
    """Every operation of ``document``, ``EXAMPLES`` cases each; the server errors seen."""
    schema = schemathesis.openapi.from_dict(document)
    errors: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy())
        def call(case: Any) -> None:
            response = case.call(base_url=base_url + base_path, headers=AUTH, timeout=30)
            if response.status_code >= 500:
                errors.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}")

        call()
    return errors


@pytest.fixture
def served(live_server: LiveServer, tmp_path: Path) -> LiveServer:
    push_fixture(live_server, tmp_path, "noop")  # something real to find, list and run
    return live_server


def test_cogports_own_operations_never_answer_a_server_error(served: LiveServer) -> None:
    document = httpx.get(f"{served.url}/openapi.json").json()
    assert fuzz(document, served.url) == []


def test_replicates_operations_never_answer_a_server_error(served: LiveServer) -> None:
    document = json.loads(Path(SPEC_PATH).read_text())
    assert fuzz(document, served.url, "/v1") == []

"""Pushes that cannot be built fail with a clear error, keep their log, and never become a version."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.accounts import Users
from tests.support.pushing import (  # noqa: F401 - fixtures
    cli_push,
    create_model,
    push_dir,
    shared_build_dirs,
    shared_venvs,
    write_model,
)

pytestmark = pytest.mark.usefixtures("shared_build_dirs")

HELLO = """\
from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(self, text: str = Input(description="Text")) -> str:
        return "hello " + text
"""
COG_YAML = 'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n'


def model_dir(tmp_path: Path, *, cog_yaml: str = COG_YAML, predict: str = HELLO, **more: str) -> Path:
    return write_model(tmp_path / "model", {"cog.yaml": cog_yaml, "predict.py": predict, **more})


def test_cli_shows_the_log_and_exits_non_zero_on_a_syntax_error(live_server: LiveServer, tmp_path: Path) -> None:
    create_model(live_server.url, ADMIN_TOKEN, "admin", "broken")
    broken = HELLO.replace('return "hello " + text', 'return "hello " + text +')
    result = cli_push(live_server.url, ADMIN_TOKEN, model_dir(tmp_path, predict=broken), "admin/broken")
    assert result.returncode == 1
    assert result.stdout == ""  # no version id
    assert "Inspecting predict.py:Predictor" in result.stderr  # the log, as it happened
    assert "Build failed" in result.stderr
    assert "syntax error in predict.py, line 6" in result.stderr
    _assert_no_versions(live_server, "admin/broken")


def test_cli_reports_a_package_that_does_not_exist(live_server: LiveServer, tmp_path: Path) -> None:
    create_model(live_server.url, ADMIN_TOKEN, "admin", "nopkg")
    cog_yaml = COG_YAML.replace("build:\n", 'build:\n  python_packages:\n    - "cogport-no-such-package-x7q==1.0"\n')
    result = cli_push(live_server.url, ADMIN_TOKEN, model_dir(tmp_path, cog_yaml=cog_yaml), "admin/nopkg")
    assert result.returncode == 1
    assert "installing Python packages failed" in result.stderr
    assert "cogport-no-such-package-x7q" in result.stderr
    _assert_no_versions(live_server, "admin/nopkg")


def _assert_no_versions(server: LiveServer, model: str) -> None:
    response = httpx.get(f"{server.url}/v1/models/{model}/versions", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200
    assert response.json()["results"] == []


CASES = {
    "unknown python_version": (
        {"cog_yaml": COG_YAML.replace('"3.11"', '"3.99"')},
        ["Python 3.99 (build.python_version) is not installed on this server. Available: ", "3.11."],
    ),
    "too old python_version": (
        {"cog_yaml": COG_YAML.replace('"3.11"', '"3.8"')},
        ["build.python_version 3.8 is too old", "3.10 or newer"],
    ),
    "predictor class missing": (
        {"cog_yaml": COG_YAML.replace("predict.py:Predictor", "predict.py:Nope")},
        ["predict.py has no 'Nope', named by predict in cog.yaml (it defines: Predictor)"],
    ),
    "predictor file missing": (
        {"cog_yaml": COG_YAML.replace("predict.py:Predictor", "model.py:Predictor")},
        ["predict: model.py:Predictor in cog.yaml names model.py, which does not exist"],
    ),
    "module not installed": (
        {"predict": "import numpy_not_installed_x\n" + HELLO},
        ["no module named 'numpy_not_installed_x'", "build.python_packages"],
    ),
    "missing system package": (
        {"cog_yaml": COG_YAML.replace("build:\n", "build:\n  system_packages:\n    - cogport-no-such-deb\n")},
        ["build.system_packages not installed on this server: cogport-no-such-deb"],
    ),
    "build.run refused": (
        {"cog_yaml": COG_YAML.replace("build:\n", 'build:\n  run:\n    - "echo hi > /tmp/x"\n')},
        ["COGPORT_BUILD__ALLOW_RUN_COMMANDS", "echo hi > /tmp/x"],
    ),
    "invalid yaml": ({"cog_yaml": "build: [\n"}, ["cog.yaml is not valid YAML"]),
    "no predict": ({"cog_yaml": 'build:\n  python_version: "3.11"\n'}, ["cog.yaml has no predict entry"]),
    "old sdk_version": (
        {"cog_yaml": COG_YAML.replace("build:\n", 'build:\n  sdk_version: "0.16.9"\n')},
        ["build.sdk_version 0.16.9 is not supported", "0.17.0"],
    ),
    "concurrency without async": (
        {"cog_yaml": COG_YAML + "concurrency:\n  max: 4\n"},
        ["concurrency 4 needs an async run()/predict()"],
    ),
    "bad input default": (
        {"predict": HELLO.replace('Input(description="Text")', "Input(default=20, ge=1, le=10)").replace("str", "int")},
        ["predict.py:Predictor (predict in cog.yaml): invalid default"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_build_errors_are_clear(client: httpx.AsyncClient, tmp_path: Path, case: str) -> None:
    files, expected = CASES[case]
    response = await client.post(
        "/v1/models", json={"owner": "admin", "name": "m", "visibility": "private", "hardware": "cpu"}
    )
    assert response.status_code == 201, response.text
    build = await push_dir(client, model_dir(tmp_path, **files), "admin/m")
    assert build["status"] == "failed", build
    assert build["version"] is None
    for text in expected:
        assert text in build["error"], build["error"]
        assert text in build["logs"]  # the log ends with the error, and stays retrievable
    again = (await client.get(f"/v1/builds/{build['id']}")).json()
    assert again["logs"] == build["logs"]
    versions = (await client.get("/v1/models/admin/m/versions")).json()
    assert versions["results"] == []


async def test_a_build_is_only_visible_to_its_owner(client: httpx.AsyncClient, users: Users, tmp_path: Path) -> None:
    response = await client.post(
        "/v1/models", json={"owner": "admin", "name": "m", "visibility": "public", "hardware": "cpu"}
    )
    assert response.status_code == 201
    build = await push_dir(client, model_dir(tmp_path), "admin/m")
    assert build["status"] == "succeeded", build["logs"]
    bob = users.bob
    response = await client.get(f"/v1/builds/{build['id']}", headers={"Authorization": f"Bearer {bob}"})
    assert response.status_code == 404
    # Pushing to someone else's public model is refused.
    response = await client.post(
        "/v1/models/admin/m/versions",
        files={"source": ("m.tar.gz", b"x", "application/gzip")},
        headers={"Authorization": f"Bearer {bob}"},
    )
    assert response.status_code == 403


async def test_garbage_upload_is_a_bad_request(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/models", json={"owner": "admin", "name": "m", "visibility": "private", "hardware": "cpu"}
    )
    assert response.status_code == 201
    response = await client.post(
        "/v1/models/admin/m/versions", files={"source": ("m.tar.gz", b"not a tarball", "application/gzip")}
    )
    assert response.status_code == 400
    assert "not a readable .tar.gz" in response.json()["detail"]


def test_cli_names_a_missing_model_and_can_create_it(live_server: LiveServer, tmp_path: Path) -> None:
    directory = model_dir(tmp_path)
    missing = cli_push(live_server.url, ADMIN_TOKEN, directory, "admin/nothing")
    assert missing.returncode == 1
    assert "there is no model admin/nothing" in missing.stderr and "--create" in missing.stderr
    created = cli_push(live_server.url, ADMIN_TOKEN, directory, "admin/nothing", "--create")
    assert created.returncode == 0, created.stderr
    assert "Created the model admin/nothing" in created.stderr
    assert len(created.version) == 64

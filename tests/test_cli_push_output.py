"""Issue 18: ``cogport push`` piped (CI logs, ``2> file``) prints each build error once and whole, never wrapped
at 80 columns (a path split in two cannot be searched for or clicked)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.models import FIXTURES
from tests.support.pushing import CLI, create_model, shared_build_dirs, shared_venvs  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("shared_build_dirs")


def test_a_failed_push_prints_its_error_once_and_unwrapped(live_server: LiveServer) -> None:
    create_model(live_server.url, ADMIN_TOKEN, "admin", "path-default")
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TERM")}
    env |= {"COGPORT_BASE_URL": live_server.url, "COGPORT_API_TOKEN": ADMIN_TOKEN}
    argv = [CLI, "push", str(FIXTURES / "path_default"), "--model", "admin/path-default", "--timeout", "200"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=240, check=False)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    errors = [line for line in lines if "the default of input 'filepath'" in line]
    assert len(errors) == 1, done.stderr  # once: in the build log, not again after it
    assert len(errors[0]) > 120 and 'filepath: str = "/src/inputs/default.png"' in errors[0]
    assert lines[-1].startswith("Build failed after ") and lines[-1].endswith("(the error is above)")
    uploading = [line for line in lines if line.startswith("Uploading ")]
    assert uploading[0].endswith(" to admin/path-default") and len(uploading[0]) > 80  # one line, not wrapped
    assert done.stdout == ""

"""``cogport run``, ``predictions``, ``models``, ``deployments`` and ``instances`` as a user runs them:
subprocesses against a live server with real pushed models."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.models import fixture_dir, push, push_fixture
from tests.support.predictions import create
from tests.support.tcp_proxy import REFUSE, cutting_proxy

COGPORT = str(Path(sys.executable).with_name("cogport"))


def _env(server: LiveServer) -> dict[str, str]:
    """A user's environment: the server and a token in COGPORT_* variables, nothing else of ours."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COGPORT_", "REPLICATE_"))}
    return {**clean, "COGPORT_BASE_URL": server.url, "COGPORT_API_TOKEN": ADMIN_TOKEN}


def cogport(
    server: LiveServer, *args: str, cwd: Path | None = None, columns: str | None = "200"
) -> subprocess.CompletedProcess[str]:
    env = _env(server) | ({} if columns is None else {"COLUMNS": columns})
    return subprocess.run([COGPORT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180, check=False)


def _push_hello(server: LiveServer, tmp_path: Path, visibility: str = "private") -> str:
    return push(server, fixture_dir(tmp_path, "hello", "predict.py:Predictor"), "hello", visibility=visibility)


def test_run_prints_output_and_json(live_server: LiveServer, tmp_path: Path) -> None:
    version = _push_hello(live_server, tmp_path, "public")  # `models list` lists public models

    result = cogport(live_server, "run", "admin/hello", "-i", "text=world")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello world\n"
    assert "greeting world" in result.stderr  # logs go to stderr

    # numbers parse as JSON, but the model wants text: the API's error, no traceback
    result = cogport(live_server, "run", f"admin/hello:{version}", "-i", "text=42", "--json")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and result.stderr.strip()

    result = cogport(live_server, "run", f"admin/hello:{version}", "-i", "text=there", "--json")
    assert result.returncode == 0, result.stderr
    prediction = json.loads(result.stdout)
    assert (prediction["status"], prediction["output"], prediction["version"]) == ("succeeded", "hello there", version)

    listed = cogport(live_server, "predictions", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    ids = [p["id"] for p in json.loads(listed.stdout)]
    assert prediction["id"] in ids
    table = cogport(live_server, "predictions", "list")
    assert table.returncode == 0 and prediction["id"] in table.stdout

    got = cogport(live_server, "predictions", "get", prediction["id"], "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["output"] == "hello there"
    shown = cogport(live_server, "predictions", "get", prediction["id"])
    assert shown.returncode == 0 and "hello there" in shown.stdout

    model = cogport(live_server, "models", "get", "admin/hello", "--json")
    assert model.returncode == 0, model.stderr
    assert json.loads(model.stdout)["latest_version"]["id"] == version
    assert "admin" in cogport(live_server, "models", "get", "admin/hello").stdout
    assert "admin/hello" in cogport(live_server, "models", "list").stdout

    missing = cogport(live_server, "models", "get", "admin/nope")
    assert missing.returncode == 1
    assert "404" in missing.stderr and "Traceback" not in missing.stderr


def test_run_streams_tokens(live_server: LiveServer, tmp_path: Path) -> None:
    push_fixture(live_server, tmp_path, "iterator")
    result = cogport(live_server, "run", "admin/iterator", "-i", "count=3")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "token0 token1 token2 \n"
    assert "yielding token2" in result.stderr

    # the first token is printed while the prediction still runs (it waits for the gate after it)
    gate = tmp_path / "gate"
    env = _env(live_server)
    args = [COGPORT, "run", "admin/iterator", "-i", "count=2", "-i", f"gate={gate}"]
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None
        first = process.stdout.read(len(b"token0 "))
        assert first == b"token0 "
        assert process.poll() is None
        gate.touch()
        rest, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    assert rest == b"token1 \n"


def _tokens(count: int) -> str:
    return "".join(f"token{i} " for i in range(count)) + "\n"


def _log_lines(stderr: str) -> list[int]:
    return [int(n) for n in re.findall(r"^line (\d+)$", stderr, re.MULTILINE)]


def test_run_resumes_a_dropped_stream(live_server: LiveServer, tmp_path: Path) -> None:
    push_fixture(live_server, tmp_path, "tokens")
    # the first stream connection is cut inside its 4th event, the second inside its 6th: the CLI comes
    # back with Last-Event-ID each time, and prints every token and log line once
    with cutting_proxy(live_server.url, {0: 3, 1: 5}.get) as proxy:
        through = dataclasses.replace(live_server, url=proxy.url)
        result = cogport(through, "run", "admin/tokens", "-i", "count=20", "-i", "delay=0.02")
    assert result.returncode == 0, result.stderr
    assert proxy.streams == 3
    assert result.stdout == _tokens(20)
    assert _log_lines(result.stderr) == list(range(20))
    assert "stream was lost" not in result.stderr


def test_run_polls_when_the_stream_cannot_be_resumed(live_server: LiveServer, tmp_path: Path) -> None:
    push_fixture(live_server, tmp_path, "tokens")
    # cut inside the 3rd event, then every reconnection is closed before an answer: after the last
    # attempt the CLI polls the prediction, and prints what the stream had not
    with cutting_proxy(live_server.url, lambda n: 2 if n == 0 else REFUSE) as proxy:
        through = dataclasses.replace(live_server, url=proxy.url)
        result = cogport(through, "run", "admin/tokens", "-i", "count=8", "-i", "delay=0.05")
    assert result.returncode == 0, result.stderr
    assert proxy.streams == 1 + 5  # the first, then RECONNECTS attempts
    assert "the stream was lost: polling for the rest" in result.stderr
    assert result.stdout == _tokens(8)
    assert _log_lines(result.stderr) == list(range(8))


def test_tables_keep_long_ids_and_names_whole_in_a_pipe(live_server: LiveServer, tmp_path: Path) -> None:
    name = "a-model-whose-name-is-much-too-long-for-an-eighty-column-table"
    version = push(live_server, fixture_dir(tmp_path, "noop"), name, visibility="public")
    prediction = create(live_server, version, {}, headers={"Prefer": "wait=60"})
    for columns in (None, "40"):  # rich's default off a terminal is 80 columns; COLUMNS does not narrow it
        listed = cogport(live_server, "predictions", "list", columns=columns)
        assert listed.returncode == 0, listed.stderr
        row = next(line for line in listed.stdout.splitlines() if prediction["id"] in line)
        assert f"admin/{name}" in row and prediction["created_at"] in row and "api" in row
        models = cogport(live_server, "models", "list", columns=columns)
        row = next(line for line in models.stdout.splitlines() if f"admin/{name}" in line)
        assert version in row


def test_run_downloads_file_outputs_and_uploads_inputs(live_server: LiveServer, tmp_path: Path) -> None:
    push_fixture(live_server, tmp_path, "file_list")
    out = tmp_path / "out"
    result = cogport(live_server, "run", "admin/file-list", "-i", "count=2", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.splitlines()]
    assert len(paths) == 2
    assert sorted(p.read_text() for p in paths) == ["file 0", "file 1"]
    assert all(p.parent == out for p in paths)

    # the current directory by default
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = cogport(live_server, "run", "admin/file-list", "-i", "count=1", cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert (cwd / Path(result.stdout.strip())).read_text() == "file 0"

    # @path uploads the file through /v1/files and passes its URL
    push_fixture(live_server, tmp_path, "file_digest")
    photo = tmp_path / "photo.bin"
    photo.write_bytes(b"\x00\x01 some bytes")
    result = cogport(live_server, "run", "admin/file-digest", "-i", f"file=@{photo}", "--json")
    assert result.returncode == 0, result.stderr
    prediction = json.loads(result.stdout)
    data = photo.read_bytes()
    assert prediction["output"] == f"{len(data)} {hashlib.sha256(data).hexdigest()} .bin"


def test_failed_prediction_exits_non_zero(live_server: LiveServer, tmp_path: Path) -> None:
    push_fixture(live_server, tmp_path, "crash")
    result = cogport(live_server, "run", "admin/crash")
    assert result.returncode == 1
    assert "failed" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_deployments_and_instances(live_server: LiveServer, tmp_path: Path) -> None:
    version = _push_hello(live_server, tmp_path)
    created = cogport(
        live_server,
        "deployments",
        "create",
        "greeter",
        "--model",
        "admin/hello",
        "--version",
        version,
        "--hardware",
        "cpu",
        "--min-instances",
        "0",
        "--max-instances",
        "1",
        "--json",
    )
    assert created.returncode == 0, created.stderr
    deployment = json.loads(created.stdout)
    assert (deployment["owner"], deployment["name"]) == ("admin", "greeter")
    assert deployment["current_release"]["version"] == version

    listed = cogport(live_server, "deployments", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [d["name"] for d in json.loads(listed.stdout)] == ["greeter"]
    table = cogport(live_server, "deployments", "list")
    assert table.returncode == 0 and "admin/greeter" in table.stdout

    updated = cogport(live_server, "deployments", "update", "admin/greeter", "--max-instances", "2", "--json")
    assert updated.returncode == 0, updated.stderr
    release = json.loads(updated.stdout)["current_release"]
    assert (release["number"], release["configuration"]["max_instances"]) == (2, 2)
    assert "admin/greeter" in cogport(live_server, "deployments", "get", "admin/greeter").stdout

    bad = cogport(live_server, "deployments", "create", "other", "--model", "admin/hello", "--version", "nope")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and bad.stderr.strip()

    everything = cogport(live_server, "instances", "--json")
    assert everything.returncode == 0, everything.stderr
    assert isinstance(json.loads(everything.stdout)["results"], list)
    one = cogport(live_server, "instances", "--deployment", "admin/greeter", "--json")
    assert one.returncode == 0, one.stderr
    answer = json.loads(one.stdout)
    assert answer["queued"] == 0 and isinstance(answer["results"], list)
    assert cogport(live_server, "instances").returncode == 0


def test_cancel_a_prediction(live_server: LiveServer, tmp_path: Path) -> None:
    push_fixture(live_server, tmp_path, "iterator")
    created = httpx.post(
        f"{live_server.url}/v1/models/admin/iterator/predictions",
        json={"input": {"count": 2, "gate": str(tmp_path / "never")}},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert created.status_code == 201, created.text
    prediction_id = created.json()["id"]
    canceled = cogport(live_server, "predictions", "cancel", prediction_id, "--json")
    assert canceled.returncode == 0, canceled.stderr
    assert json.loads(canceled.stdout)["id"] == prediction_id
    _wait_until_canceled(live_server, prediction_id)

    # Ctrl-C during `cogport run` cancels the prediction on the server
    env = _env(live_server)
    args = [COGPORT, "run", "admin/iterator", "-i", "count=2", "-i", f"gate={tmp_path / 'never'}"]
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None
        assert process.stdout.read(len(b"token0 ")) == b"token0 "
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=90)
        except subprocess.TimeoutExpired as exc:  # say what it had printed, and where the run was
            process.kill()
            runs = httpx.get(
                f"{live_server.url}/v1/predictions", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            ).json()["results"]
            states = [(run["id"], run["status"]) for run in runs]
            raise AssertionError(f"no end 90 s after Ctrl-C: stderr={exc.stderr!r}, runs={states}") from None
    assert process.returncode == 130, stderr
    assert b"canceled prediction" in stderr
    _wait_until_canceled(live_server, stderr.decode().split("canceled prediction ")[1].split()[0])


def _wait_until_canceled(server: LiveServer, prediction_id: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        got = cogport(server, "predictions", "get", prediction_id, "--json")
        status = json.loads(got.stdout)["status"]
        if status == "canceled":
            return
        assert time.monotonic() < deadline, status
        time.sleep(0.2)

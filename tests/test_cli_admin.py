"""``cogport accounts`` and ``cogport tokens``, run as subprocesses against a live server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ADMIN_TOKEN, LiveServer

COGPORT = str(Path(sys.executable).with_name("cogport"))


def cogport(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COGPORT_", "REPLICATE_"))}
    return subprocess.run(
        [COGPORT, *args], env={**clean, **(env or {})}, capture_output=True, text=True, timeout=60, check=False
    )


def _env(server: LiveServer, token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"COGPORT_BASE_URL": server.url, "COGPORT_API_TOKEN": token}


def _whoami(server: LiveServer, token: str) -> str:
    response = httpx.get(f"{server.url}/v1/account", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    username: str = response.json()["username"]
    return username


def test_create_accounts_and_tokens(live_server: LiveServer) -> None:
    env = _env(live_server)
    for name in ("carol", "dave"):
        result = cogport("accounts", "create", name, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"created user {name}"

    result = cogport("accounts", "create", "team", "--org", "--member", "carol", "--member", "dave", "--json", env=env)
    assert result.returncode == 0, result.stderr
    team = json.loads(result.stdout)
    assert (team["username"], team["type"], team["members"]) == ("team", "organization", ["carol", "dave"])

    result = cogport("tokens", "create", "carol", "--label", "laptop", env=env)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("r8_")
    assert _whoami(live_server, token) == "carol"

    # flags instead of environment variables
    flags = ["--base-url", live_server.url, "--token", ADMIN_TOKEN]
    result = cogport("tokens", "create", "dave", *flags)
    assert result.returncode == 0, result.stderr
    assert _whoami(live_server, result.stdout.strip().splitlines()[-1]) == "dave"

    result = cogport("accounts", "list", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "admin\tuser (admin)",
        "carol\tuser",
        "dave\tuser",
        "team\torganization",
    ]

    # carol's new token makes her a member of the org's models' owners
    created = httpx.post(
        f"{live_server.url}/v1/models",
        json={"owner": "team", "name": "shared", "visibility": "private", "hardware": "cpu"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert created.status_code == 201, created.text


def test_errors_exit_non_zero_with_a_message(live_server: LiveServer) -> None:
    env = _env(live_server)
    assert cogport("accounts", "create", "erin", env=env).returncode == 0
    result = cogport("tokens", "create", "erin", env=env)
    erin = result.stdout.strip().splitlines()[-1]

    duplicate = cogport("accounts", "create", "erin", env=env)
    assert duplicate.returncode == 1
    assert "409" in duplicate.stderr and "already exists" in duplicate.stderr

    not_admin = cogport("accounts", "create", "frank", env=_env(live_server, erin))
    assert not_admin.returncode == 1
    assert "403" in not_admin.stderr

    wrong = cogport("tokens", "create", "erin", env=_env(live_server, "r8_wrong"))
    assert wrong.returncode == 1
    assert "401" in wrong.stderr
    assert wrong.stdout == ""

    unknown = cogport("tokens", "create", "nobody", env=env)
    assert unknown.returncode == 1
    assert "nobody" in unknown.stderr

    unreachable = cogport("accounts", "list", "--base-url", "http://127.0.0.1:9", "--token", ADMIN_TOKEN)
    assert unreachable.returncode == 2
    assert "cannot reach" in unreachable.stderr

    no_token = cogport("accounts", "list", "--base-url", live_server.url)
    assert no_token.returncode == 2
    assert "--token" in no_token.stderr


def test_list_and_revoke_tokens(live_server: LiveServer) -> None:
    env = _env(live_server)
    assert cogport("accounts", "create", "gina", env=env).returncode == 0
    first = cogport("tokens", "create", "gina", env=env).stdout.strip().splitlines()[-1]
    second = cogport("tokens", "create", "gina", "--label", "ci", env=env).stdout.strip().splitlines()[-1]
    assert _whoami(live_server, first) == "gina"

    listed = cogport("tokens", "list", "gina", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [line[3] for line in lines] == ["active", "active"]
    assert lines[0][1] == first[:3] + "…" + first[-4:] and lines[1][4] == "ci"
    assert first not in listed.stdout and second not in listed.stdout

    revoked = cogport("tokens", "revoke", first, env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert "of gina" in revoked.stdout
    response = httpx.get(f"{live_server.url}/v1/account", headers={"Authorization": f"Bearer {first}"})
    assert response.status_code == 401

    by_id = cogport("tokens", "revoke", "--id", lines[1][0], env=env)
    assert by_id.returncode == 0, by_id.stderr
    response = httpx.get(f"{live_server.url}/v1/account", headers={"Authorization": f"Bearer {second}"})
    assert response.status_code == 401

    as_json = json.loads(cogport("tokens", "list", "gina", "--json", env=env).stdout)
    assert all(row["revoked_at"] for row in as_json)
    unknown = cogport("tokens", "revoke", "r8_nosuchtoken", env=env)
    assert unknown.returncode == 1 and "404" in unknown.stderr

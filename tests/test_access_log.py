"""The request log: one ``cogport.access`` line per request, with the route template and the caller, never
a token or a query string; JSON objects with ``COGPORT_LOG_FORMAT=json``."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from cogport.app import create_app
from cogport.logs import JsonFormatter, TextFormatter
from cogport.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.support.accounts import Users


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "cogport.access"]


async def test_one_text_line_per_request(
    client: httpx.AsyncClient, users: Users, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cogport.access"):
        await client.get("/v1/account", headers=Users.headers(users.alice))
        await client.get("/v1/predictions/abc123?secret=hunter2hunter2", headers=Users.headers(users.alice))
        await client.get("/v1/account", headers={"Authorization": ""})
        await client.get("/nowhere/at/all")
    records = access_records(caplog)
    assert [r.getMessage().split(" ")[:3] for r in records] == [
        ["GET", "/v1/account", "200"],
        ["GET", "/v1/predictions/{prediction_id}", "404"],
        ["GET", "/v1/account", "401"],
        ["GET", "unmatched", "404"],
    ]
    assert [r.getMessage().split(" ")[-1] for r in records] == [
        "alice",
        "alice",
        "-",
        "-",
    ]  # nothing authenticates an unknown path
    assert all(r.getMessage().split(" ")[3].endswith("ms") for r in records)
    for record in records:
        line = TextFormatter().format(record)
        for secret in (users.alice, ADMIN_TOKEN, "hunter2", "abc123", "nowhere"):
            assert secret not in line


async def test_json_lines(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    settings.log_format = "json"
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers) as client:
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="cogport.access"):
                await client.post("/v1/predictions", json={"version": "0" * 64, "input": {"prompt": "private words"}})
    (record,) = access_records(caplog)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["logger"] == "cogport.access"
    assert {k: entry[k] for k in ("method", "route", "status", "account")} == {
        "method": "POST",
        "route": "/v1/predictions",
        "status": 422,
        "account": "admin",
    }
    assert isinstance(entry["duration_ms"], float) and "time" in entry
    assert ADMIN_TOKEN not in line and "private words" not in line
    other = logging.LogRecord("cogport.app", logging.WARNING, __file__, 1, "hello %s", ("there",), None)
    assert json.loads(JsonFormatter().format(other))["message"] == "hello there"

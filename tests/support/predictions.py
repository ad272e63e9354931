"""Predictions over plain HTTP against a live server (by URL, so subprocess servers work too)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN, LiveServer

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _url(server: LiveServer | str) -> str:
    return server if isinstance(server, str) else server.url


def create(
    server: LiveServer | str,
    version: str,
    input: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """``POST /v1/predictions`` with extra body ``fields`` (webhook, ...) and ``headers`` (Prefer,
    Cancel-After); asserts 201 (or 202 when a sync wait ran out)."""
    response = httpx.post(
        f"{_url(server)}/v1/predictions",
        json={"version": version, "input": input, **fields},
        headers={**AUTH, **(headers or {})},
        timeout=70,
    )
    assert response.status_code in (201, 202), response.text
    body: dict[str, Any] = response.json()
    return body


def get(server: LiveServer | str, prediction_id: str) -> dict[str, Any]:
    response = httpx.get(f"{_url(server)}/v1/predictions/{prediction_id}", headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def cancel(server: LiveServer | str, prediction_id: str) -> dict[str, Any]:
    response = httpx.post(f"{_url(server)}/v1/predictions/{prediction_id}/cancel", headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for(server: LiveServer | str, prediction_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
    """Poll until the prediction's status is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while (body := get(server, prediction_id))["status"] not in statuses:
        assert time.monotonic() < deadline, f"{prediction_id} stayed {body['status']}"
        time.sleep(0.05)
    return body

from __future__ import annotations

import httpx

from tests.support.openapi import validate


async def test_account_and_auth(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/account")
    assert response.status_code == 200
    validate("/account", "get", 200, response.json())
    assert response.json()["username"] == "admin"

    anonymous = await client.get("/v1/account", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert anonymous.json()["detail"] == "You did not pass an authentication token"

    legacy = await client.get("/v1/account", headers={"Authorization": "Token r8_wrong"})
    assert legacy.status_code == 401
    assert legacy.headers["content-type"].startswith("application/problem+json")

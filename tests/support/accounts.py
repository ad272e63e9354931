"""Test helpers that set up accounts through the admin API (as an operator would)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass
class Users:
    alice: str
    bob: str

    @staticmethod
    def headers(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


async def create_user(client: httpx.AsyncClient, username: str) -> str:
    response = await client.post("/admin/v1/accounts", json={"username": username})
    assert response.status_code == 201, response.text
    response = await client.post(f"/admin/v1/accounts/{username}/tokens", json={})
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


async def create_users(client: httpx.AsyncClient) -> Users:
    alice = await create_user(client, "alice")
    bob = await create_user(client, "bob")
    response = await client.post(
        "/admin/v1/accounts", json={"username": "acme", "type": "organization", "members": ["alice"]}
    )
    assert response.status_code == 201, response.text
    return Users(alice=alice, bob=bob)

"""The playground's pages and sessions over HTTP (the browser tests are in test_web_browser.py): signing in
and out, the cookie's attributes, the CSRF check for cookie-signed changes, visibility, escaping, and the
form fields a schema gives."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from fastapi import FastAPI

from cogport.web.forms import input_fields, output_schema
from tests.conftest import ADMIN_TOKEN
from tests.support.accounts import Users

SCHEMAS = Path(__file__).parent / "data" / "schemas"
ORIGIN = {"Origin": "http://testserver"}


def browser(app: FastAPI) -> httpx.AsyncClient:
    """A client with no token: it signs in like a browser and keeps the cookie."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def sign_in(web: httpx.AsyncClient, token: str, next_path: str = "/") -> httpx.Response:
    return await web.post("/-/sign-in", data={"token": token, "next": next_path}, headers=ORIGIN)


async def test_sign_in_sets_a_strict_httponly_cookie_and_sign_out_ends_the_session(app: FastAPI) -> None:
    async with browser(app) as web:
        page = await web.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<label for="token">API token</label>' in page.text and ">Sign in</button>" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]

        bad = await sign_in(web, "r8_" + "x" * 37)
        assert bad.status_code == 401 and "That API token is not valid" in bad.text
        assert "set-cookie" not in bad.headers

        response = await sign_in(web, ADMIN_TOKEN, "/admin/anything?x=1")
        assert response.status_code == 303
        assert response.headers["location"] == "/admin/anything?x=1"
        assert ADMIN_TOKEN not in response.headers["location"]
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("cogport_session=")
        assert ADMIN_TOKEN not in cookie
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes
        assert "samesite=strict" in cookie.lower()

        # The cookie signs in the API too (the page's scripts call /v1 with it)
        account = await web.get("/v1/account")
        assert account.status_code == 200 and account.json()["username"] == "admin"
        index = await web.get("/")
        assert "Signed in as <strong>admin</strong>" in index.text

        signed_out = await web.post("/-/sign-out", headers=ORIGIN)
        assert signed_out.status_code == 303
        assert "cogport_session=" in signed_out.headers["set-cookie"]
        assert (await web.get("/v1/account")).status_code == 401
        assert "API token" in (await web.get("/")).text


async def test_a_kept_cookie_dies_with_sign_out_and_with_its_token(app: FastAPI, client: httpx.AsyncClient) -> None:
    created = await client.post("/admin/v1/accounts", json={"username": "carol"})
    assert created.status_code == 201
    token = await client.post("/admin/v1/accounts/carol/tokens", json={})
    carol_token = token.json()["token"]
    async with browser(app) as web:
        await sign_in(web, carol_token)
        stolen = web.cookies["cogport_session"]
        await web.post("/-/sign-out", headers=ORIGIN)
    async with browser(app) as thief:
        thief.cookies.set("cogport_session", stolen)
        assert (await thief.get("/v1/account")).status_code == 401  # the row is gone, not just the cookie

    async with browser(app) as web:
        await sign_in(web, carol_token)
        assert (await web.get("/v1/account")).status_code == 200
        revoked = await client.post("/admin/v1/tokens/revoke", json={"token": carol_token})
        assert revoked.status_code == 200, revoked.text
        app.state.principals.clear()  # another process would see it within the cache's ttl
        assert (await web.get("/v1/account")).status_code == 401
        assert "API token" in (await web.get("/")).text


async def test_cookie_signed_changes_must_come_from_our_pages(app: FastAPI, client: httpx.AsyncClient) -> None:
    async with browser(app) as web:
        await sign_in(web, ADMIN_TOKEN)
        body = {"owner": "admin", "name": "csrf", "visibility": "private", "hardware": "cpu"}
        forged = await web.post("/v1/models", json=body, headers={"Origin": "http://evil.example"})
        assert forged.status_code == 403
        assert forged.headers["content-type"] == "application/problem+json"
        assert (await web.post("/v1/models", json=body)).status_code == 403  # no Origin at all
        assert (await client.get("/v1/models/admin/csrf")).status_code == 404
        made = await web.post("/v1/models", json=body, headers={"Sec-Fetch-Site": "same-origin"})
        assert made.status_code == 201, made.text
        # reads need no Origin; a sign-in posted from another site is refused
        assert (await web.get("/v1/models/admin/csrf")).status_code == 200
    async with browser(app) as web:
        cross = await web.post("/-/sign-in", data={"token": ADMIN_TOKEN}, headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403 and "set-cookie" not in cross.headers


async def test_sign_in_goes_only_to_local_paths(app: FastAPI) -> None:
    async with browser(app) as web:
        for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"):
            response = await sign_in(web, ADMIN_TOKEN, target)
            assert response.status_code == 303 and response.headers["location"] == "/", target


async def test_pages_show_only_what_the_caller_can_see(app: FastAPI, client: httpx.AsyncClient, users: Users) -> None:
    for name, visibility in (("secret", "private"), ("open", "public")):
        response = await client.post(
            "/v1/models",
            json={
                "owner": "admin",
                "name": name,
                "visibility": visibility,
                "hardware": "cpu",
                "description": "<script>alert('x')</script> & more",
            },
        )
        assert response.status_code == 201, response.text
    async with browser(app) as web:
        assert (await web.get("/admin/secret")).status_code == 303  # signed out: to the sign-in page
        assert (await web.get("/admin/secret")).headers["location"] == "/-/sign-in?next=/admin/secret"
        await sign_in(web, users.bob)
        index = await web.get("/")
        assert "admin/open" in index.text and "admin/secret" not in index.text
        hidden = await web.get("/admin/secret")
        assert hidden.status_code == 404 and "does not exist, or you cannot see it" in hidden.text
        shown = await web.get("/admin/open")
        assert shown.status_code == 200
        assert "<script>alert" not in shown.text
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more" in shown.text
        assert "no version yet" in shown.text.lower()
        assert (await web.get("/p/doesnotexist")).status_code == 404
        assert (await web.get("/deployments/admin/nope")).status_code == 404
        # API paths keep their JSON 404s
        missing = await web.get("/v1/nothing-here")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        assert (await web.get("/internal/x")).headers["content-type"] == "application/problem+json"


async def test_pages_off(settings: object, tmp_path: Path) -> None:
    from cogport.app import create_app
    from cogport.settings import Settings, WebSettings

    assert isinstance(settings, Settings)
    settings.web = WebSettings(enabled=False)
    application = create_app(settings)
    async with application.router.lifespan_context(application), browser(application) as web:
        assert (await web.get("/")).status_code == 404
        assert (await web.get("/-/static/playground.js")).status_code == 404


def test_form_fields_follow_the_schema_in_x_order() -> None:
    schema = json.loads((SCHEMAS / "all-inputs.json").read_text())
    fields = input_fields(schema)
    assert [f.name for f in fields] == [
        "prompt", "count", "scale", "shout", "color", "size", "api_key", "tags", "note", "seed", "code", "document",
    ]  # fmt: skip
    by_name = {f.name: f for f in fields}
    assert by_name["prompt"].kind == "text" and by_name["prompt"].required and by_name["prompt"].max_length == 200
    assert by_name["prompt"].description == "A required string"
    count = by_name["count"]
    assert (count.kind, count.minimum, count.maximum, count.default_text) == ("integer", 1, 10, "3")
    assert (by_name["scale"].kind, by_name["scale"].maximum) == ("number", 1)
    assert by_name["shout"].kind == "boolean" and by_name["shout"].default is False
    assert by_name["color"].kind == "select" and by_name["color"].choices == ("red", "green", "blue")
    assert by_name["size"].choice_type == "integer" and by_name["size"].default == 512
    assert by_name["api_key"].kind == "secret"
    assert by_name["tags"].kind == "list" and by_name["tags"].default_text == "a\nb"
    assert by_name["code"].pattern == "^[a-z0-9]+$"
    assert by_name["document"].kind == "file" and not by_name["document"].required
    assert output_schema(schema)["type"] == "object"

    image = json.loads((SCHEMAS / "image.json").read_text())
    assert [f.kind for f in input_fields(image)] == ["file", "select", "integer"]
    assert output_schema(image) == {"title": "Output", "type": "string", "format": "uri"}


def test_odd_schemas_give_fields_not_errors() -> None:
    assert input_fields(None) == [] and input_fields({}) == [] and output_schema({"components": 3}) == {}
    odd = {
        "components": {
            "schemas": {
                "Input": {
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "uri"}, "x-order": 2},
                        "blob": {"type": "object", "default": {"a": 1}, "x-order": 1},
                        "numbers": {"type": "array", "items": {"type": "number"}},
                        "broken": {"allOf": [{"$ref": "#/components/schemas/missing"}], "x-order": 0},
                        "bad": "not a property",
                    }
                }
            }
        }
    }
    fields = input_fields(odd)
    kinds = [(f.name, f.kind) for f in fields]
    assert kinds == [("broken", "json"), ("blob", "json"), ("files", "files"), ("numbers", "list")]
    assert fields[1].default_text == '{\n  "a": 1\n}'
    assert fields[3].item_kind == "number"


def test_page_data_cannot_end_its_script_element() -> None:
    from cogport.web.pages import _json

    assert "</script>" not in _json({"output": "</script><script>alert(1)</script>"})
    assert re.search(r"<\\/script>", _json("</script>"))


async def test_a_training_has_its_page_too(app: FastAPI, client: httpx.AsyncClient, users: Users) -> None:
    from tests.support.registry import create_model
    from tests.test_trainings_api import DATA, add_base, post_training, stop_dispatcher

    await stop_dispatcher(app)  # it stays queued: the page shows it as it is
    await create_model(client, users.alice, "alice/base", visibility="private")
    await create_model(client, users.alice, "alice/dest", visibility="private")
    version = await add_base(app.state.database, "alice/base")
    created = await post_training(
        client, users.alice, "alice/base", version, {"destination": "alice/dest", "input": {"data": DATA}}
    )
    training = created.json()
    assert training["urls"]["web"] == f"http://testserver/p/{training['id']}"
    async with browser(app) as web:
        await sign_in(web, users.alice)
        shown = await web.get(f"/p/{training['id']}")
        assert shown.status_code == 200
        assert f'Training <span class="mono">{training["id"]}</span>' in shown.text
        assert 'data-kind="training"' in shown.text and DATA in shown.text
        # the page's data is what GET /v1/trainings/{id} answers
        data = re.search(r'<script type="application/json" id="run-data">(.*?)</script>', shown.text, re.S)
        assert data is not None and json.loads(data.group(1))["id"] == training["id"]
    async with browser(app) as web:
        await sign_in(web, users.bob)
        assert (await web.get(f"/p/{training['id']}")).status_code == 404

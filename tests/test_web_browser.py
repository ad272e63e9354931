"""The playground in a real browser: Debian's chromium driven by Playwright (headless), against a live
server with real models in coglet. A person's path through it: sign in, a form from a schema filled in
(keyboard included), a run, streamed output, a file input uploaded, an image output shown, a cancel, a
prediction's own page, deployments, a narrow screen, sign out; no console errors anywhere.

Screenshots land in the test's tmp dir, and in ``$COGPORT_TEST_SCREENSHOTS`` when set (the README's comes
from there)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.browser import Browser, chromium
from tests.support.models import fixture_dir, push
from tests.test_files_e2e import png

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WAIT_MS = 120_000

pytestmark = pytest.mark.timeout(900)


@contextmanager
def browsing(live_server: LiveServer, tmp_path: Path) -> Iterator[Browser]:
    """A browser on the server (opened after the models are pushed: Playwright's sync API holds the loop)."""
    with chromium(tmp_path, live_server.url) as opened:
        try:
            yield opened
        except BaseException:
            for index, page in enumerate(opened.context.pages):
                opened.screenshot(page, f"failure-{index}")
            raise
        finally:
            _keep(opened)


def _keep(opened: Browser) -> None:
    keep = os.environ.get("COGPORT_TEST_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for shot in opened.shots.glob("*.png"):
            shutil.copy(shot, Path(keep) / shot.name)


def sign_in(page: Any) -> None:
    page.goto("/")
    page.get_by_label("API token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in as").wait_for()


def wait_status(page: Any, status: str) -> None:
    page.locator(f".status[data-status={status}]").wait_for(timeout=WAIT_MS)


def test_playground_end_to_end(live_server: LiveServer, tmp_path: Path) -> None:
    url = live_server.url
    push(url, EXAMPLES / "all-inputs", "all-inputs", visibility="public")
    push(url, EXAMPLES / "image", "image")
    push(url, fixture_dir(tmp_path, "tokens"), "tokens")
    slow = push(url, fixture_dir(tmp_path, "slow"), "slow")
    push(url, fixture_dir(tmp_path, "media"), "media")
    with browsing(live_server, tmp_path) as browser:
        walk_through(browser, url, slow, tmp_path)


def walk_through(browser: Browser, url: str, slow: str, tmp_path: Path) -> None:

    page = browser.new_page()
    # signed out, a model page sends you to sign in and back
    page.goto("/admin/all-inputs")
    assert "/-/sign-in" in page.url
    page.get_by_label("API token").fill(ADMIN_TOKEN)
    page.get_by_label("API token").press("Enter")
    page.wait_for_url(f"{url}/admin/all-inputs")
    cookie = next(c for c in browser.context.cookies() if c["name"] == "cogport_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert ADMIN_TOKEN not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # the page's scripts cannot read the session

    page.goto("/")
    browser.screenshot(page, "models")
    for name in ("admin/all-inputs", "admin/image", "admin/tokens", "admin/slow"):
        assert page.get_by_role("link", name=name).is_visible()

    # a form from the schema, in x-order, with labels, help, bounds, defaults, selects, a secret, a list, a file
    page.get_by_role("link", name="admin/all-inputs").click()
    labels = page.locator(".field label").all_inner_texts()
    assert [label.rstrip(" *") for label in labels] == [
        "prompt", "count", "scale", "shout", "color", "size", "api_key", "tags", "note", "seed", "code", "document",
    ]  # fmt: skip
    count = page.get_by_label("count")
    assert (count.get_attribute("min"), count.get_attribute("max"), count.input_value()) == ("1", "10", "3")
    assert page.get_by_label("api_key").get_attribute("type") == "password"
    assert page.get_by_label("color").input_value() == "red"
    assert page.get_by_label("shout").get_attribute("type") == "checkbox"
    assert page.get_by_text("An integer from 1 to 10").is_visible()
    assert page.get_by_label("tags").input_value() == "a\nb"

    page.get_by_label("prompt").fill("a cat")
    count.fill("7")
    page.get_by_label("shout").focus()
    page.keyboard.press("Space")  # without a mouse
    page.get_by_label("color").select_option("blue")
    page.get_by_label("size").select_option("1024")
    page.get_by_label("api_key").fill("s3cret")
    page.get_by_label("tags").fill("x\ny\nz")
    document = tmp_path / "doc.txt"
    document.write_bytes(b"twelve bytes")
    page.get_by_label("document").set_input_files(str(document))
    page.get_by_role("button", name="Run").focus()
    page.keyboard.press("Enter")
    wait_status(page, "succeeded")
    output = json.loads(page.locator(".output").inner_text())
    assert output["summary"] == "A CAT X7 SCALE=0.5 COLOR=BLUE SIZE=1024 CODE=ABC123 KEY=SET"
    assert (output["tags"], output["document_bytes"], output["total"]) == (["x", "y", "z"], 12, 3.5)

    # the exact request, three ways
    page.get_by_text("Copy as curl / Python / JavaScript").click()
    curl = page.locator("#snippet-curl").inner_text()
    sent = json.loads(curl.split("-d '", 1)[1].split("' \\", 1)[0])
    assert sent["input"]["count"] == 7 and sent["input"]["tags"] == ["x", "y", "z"]
    assert sent["input"]["document"].startswith(f"{url}/v1/files/")  # uploaded through the Files API
    assert f"{url}/v1/predictions" in curl and "$REPLICATE_API_TOKEN" in curl and ADMIN_TOKEN not in curl
    python = page.locator("#snippet-python").inner_text()
    assert f'replicate.Client(base_url="{url}")' in python and '"shout": True,' in python
    javascript = page.locator("#snippet-javascript").inner_text()
    assert f'baseUrl: "{url}/v1"' in javascript and '"size": 1024' in javascript
    browser.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    page.get_by_role("button", name="Copy curl").click()
    page.get_by_role("button", name="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == curl
    browser.screenshot(page, "form-succeeded")

    # a prediction through the official flow: the same request from the snippet gives the same output
    replayed = httpx.post(f"{url}/v1/predictions", json=sent, headers={**AUTH, "Prefer": "wait"}, timeout=120)
    assert replayed.json()["output"]["summary"] == output["summary"]

    # streamed output appears while the prediction runs
    gate = tmp_path / "gate"
    page.goto("/admin/tokens")
    page.get_by_label("count").fill("4")
    page.get_by_label("gate").fill(str(gate))
    page.get_by_role("button", name="Run").click()
    page.locator(".output", has_text="token0").wait_for(timeout=WAIT_MS)
    assert page.locator(".status").inner_text() == "processing"
    assert "token1" not in page.locator(".output").inner_text()
    browser.screenshot(page, "streaming")
    gate.write_text("go")
    wait_status(page, "succeeded")
    assert page.locator(".output").inner_text().split() == ["token0", "token1", "token2", "token3"]
    assert "line 3" in page.locator(".logs").inner_text()

    # a file input uploaded, an image output shown inline
    page.goto("/admin/image")
    picture = tmp_path / "picture.png"
    picture.write_bytes(png(24, 16))
    page.get_by_label("image").set_input_files(str(picture))
    page.get_by_label("effect").select_option("invert")
    page.get_by_role("button", name="Run").click()
    wait_status(page, "succeeded")
    image = page.get_by_role("img", name="Output image 1: output.png")
    image.wait_for()
    assert image.evaluate("img => img.complete && img.naturalWidth") == 24
    assert page.get_by_role("link", name="Download output.png").is_visible()
    browser.screenshot(page, "image")

    # the prediction's own page (urls.web)
    page.get_by_role("link", name="Open this prediction's page").click()
    page.wait_for_url(f"{url}/p/**")
    prediction_id = page.url.rsplit("/", 1)[1]
    web_url = httpx.get(f"{url}/v1/predictions/{prediction_id}", headers=AUTH).json()["urls"]["web"]
    assert web_url == page.url
    wait_status(page, "succeeded")
    assert page.get_by_role("img", name="Output image 1: output.png").evaluate("img => img.naturalWidth") == 24
    assert page.get_by_role("heading", name=f"Prediction {prediction_id}").is_visible()
    browser.screenshot(page, "prediction-page")

    # several files of several kinds, in the model's order: audio and an image inline, a link for the rest
    page.goto("/admin/media")
    page.get_by_role("button", name="Run").click()
    wait_status(page, "succeeded")
    figures = page.locator(".file-output figcaption").all_inner_texts()
    # (coglet sends them inline, without names: cogport names them by position and type)
    assert figures == ["Download output-0.wav", "Download output-1.png", "Download output-2.txt"]
    audio = page.get_by_label("Output audio output-0.wav")
    audio.wait_for()
    page.wait_for_function("document.querySelector('audio').readyState >= 1")  # the browser parsed the WAV
    assert 0.4 < audio.evaluate("a => a.duration") < 0.6
    assert page.locator(".file-output img").evaluate("img => img.naturalWidth") == 40
    assert page.locator(".file-output video").count() == 0
    browser.screenshot(page, "media")

    # cancel a running prediction
    page.goto("/admin/slow")
    page.get_by_label("seconds").fill("120")
    page.get_by_role("button", name="Run").click()
    wait_status(page, "processing")
    page.get_by_role("button", name="Cancel").click()
    wait_status(page, "canceled")
    assert not page.get_by_role("button", name="Cancel").is_visible()

    # deployments and their instances
    created = httpx.post(
        f"{url}/v1/deployments",
        json={
            "name": "slow-dep",
            "model": "admin/slow",
            "version": slow,
            "hardware": "cpu",
            "min_instances": 1,
            "max_instances": 1,
        },
        headers=AUTH,
    )
    assert created.status_code == 200, created.text
    page.goto("/deployments")
    page.get_by_role("link", name="admin/slow-dep").click()
    page.locator("#instance-rows td", has_text="idle").wait_for(timeout=WAIT_MS)
    assert page.get_by_role("heading", name="Deployment admin/slow-dep").is_visible()
    browser.screenshot(page, "deployment")

    # a narrow screen: nothing wider than the viewport
    phone = browser.new_page(width=390, height=844)
    phone.goto("/admin/all-inputs")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    assert phone.get_by_role("button", name="Run").is_visible()
    browser.screenshot(phone, "narrow")
    phone.close()

    # sign out: the cookie no longer opens the API
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API token").wait_for()
    status = page.evaluate("fetch('/v1/account').then(r => r.status)")
    assert status == 401
    # the console stayed clean, apart from that deliberate 401
    problems = [m for m in browser.problems.messages if "401" not in m]
    assert problems == [], problems


def test_keyboard_alone_signs_in_and_runs(live_server: LiveServer, tmp_path: Path) -> None:
    push(live_server.url, EXAMPLES / "hello-world", "hello")
    with browsing(live_server, tmp_path) as browser:
        keyboard_only(browser)


def keyboard_only(browser: Browser) -> None:
    page = browser.new_page()
    page.goto("/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "token":
            break
    page.keyboard.type(ADMIN_TOKEN)
    page.keyboard.press("Enter")
    page.get_by_text("Signed in as").wait_for()
    page.goto("/admin/hello")
    order = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page.keyboard.press("Tab")
        active = page.evaluate("document.activeElement.id || document.activeElement.textContent")
        order.append(active)
        if active == "input-text":
            page.keyboard.type("keys")
        if active == "run-button":
            page.keyboard.press("Enter")
            break
    assert "input-text" in order and order[-1] == "run-button", order
    wait_status(page, "succeeded")
    assert page.locator(".output").inner_text() == "hello keys"
    assert browser.problems.messages == []

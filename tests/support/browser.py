"""A real browser for the playground tests: Debian's ``chromium`` driven by Playwright (``executable_path``;
Playwright's own browser download is never used), headless, with a fresh profile per test. Every console
error, page error and failed request of the page is collected: a test ends by asserting there were none."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_ENV = "COGPORT_TEST_CHROMIUM"

# Without the background-networking flags, Chromium keeps trying Google's hosts, which a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]


def chromium_path() -> str:
    """The browser to drive: ``$COGPORT_TEST_CHROMIUM``, else ``chromium`` on PATH. Missing is an error (a test
    that needs a browser fails without one; ``.ci/run`` installs Debian's package)."""
    path = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError(
            "Chromium is not installed: the browser tests need Debian's `chromium` package "
            f"(apt-get install chromium) or {CHROMIUM_ENV}=/path/to/chromium"
        )
    return path


@dataclass
class Problems:
    """What went wrong in the page, as the browser reported it."""

    messages: list[str] = field(default_factory=list)

    def watch(self, page: Any) -> None:
        page.on("console", lambda msg: msg.type == "error" and self.messages.append(f"console: {msg.text}"))
        page.on("pageerror", lambda exc: self.messages.append(f"page error: {exc}"))
        page.on("requestfailed", self._failed)

    def _failed(self, request: Any) -> None:
        failure = request.failure or ""
        # An EventSource or media load the page itself closes is reported as aborted: not a problem.
        if "ERR_ABORTED" not in failure:
            self.messages.append(f"request failed: {request.method} {request.url} {failure}")


@dataclass
class Browser:
    context: Any
    problems: Problems
    shots: Path

    def new_page(self, *, width: int = 1280, height: int = 900) -> Any:
        page = self.context.new_page()
        page.set_viewport_size({"width": width, "height": height})
        page.set_default_timeout(30_000)
        self.problems.watch(page)
        return page

    def screenshot(self, page: Any, name: str) -> Path:
        path = self.shots / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@contextmanager
def chromium(tmp_path: Path, base_url: str) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    profile = tmp_path / "chromium-profile"
    shots = tmp_path / "screenshots"
    shots.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=chromium_path(),
            headless=True,
            args=CHROMIUM_ARGS,
            base_url=base_url,
            accept_downloads=True,
        )
        try:
            yield Browser(context=context, problems=Problems(), shots=shots)
        finally:
            context.close()

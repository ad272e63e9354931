"""The CLI's HTTP client and its error-to-exit-code handling."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import httpx
import typer
from rich.console import Console
from rich.markup import escape


def _stderr() -> Console:
    """The console for messages. Piped (CI logs, ``2> file``), rich would wrap at 80 columns and split paths
    and URLs in two: there, lines are printed whole."""
    console = Console(stderr=True)
    return console if console.is_terminal else Console(stderr=True, soft_wrap=True)


err = _stderr()
P = ParamSpec("P")
R = TypeVar("R")

BaseUrlOption = typer.Option(
    "http://127.0.0.1:8000", "--base-url", envvar="COGPORT_BASE_URL", help="Where the cogport server is."
)
TokenOption = typer.Option(..., "--token", envvar="COGPORT_API_TOKEN", help="An API token.", show_default=False)


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"{status}: {detail}")


class Client:
    def __init__(self, base_url: str, token: str, timeout: float = 60.0) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "cogport-cli"},
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
                title, detail = body.get("title"), body.get("detail")
                if isinstance(detail, list | dict):  # a validation error's details
                    detail = json.dumps(detail)
                if title and detail and str(title) not in str(detail):
                    detail = f"{title}: {detail}"
                detail = detail or title or response.text
            except ValueError:
                detail = response.text or response.reason_phrase
            raise ApiError(response.status_code, str(detail).strip())
        if not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn API and connection errors into a message and a non-zero exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ApiError as exc:
            err.print(f"[red]error[/red] ({exc.status}): {escape(exc.detail)}")
            raise typer.Exit(1) from exc
        except httpx.HTTPError as exc:
            err.print(f"[red]error[/red]: cannot reach the server: {exc}")
            raise typer.Exit(2) from exc

    return wrapper


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))

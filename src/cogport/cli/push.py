"""``cogport push DIR --model OWNER/NAME``: upload a Cog model directory and follow its build.

Progress and the build log go to stderr as they happen; the new version id is the last line on stdout.
A failed build exits with status 1 after printing the log and the error.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from cogport.cli.client import ApiError, BaseUrlOption, Client, TokenOption, err, handle_errors

POLL_INTERVAL = 0.1


@handle_errors
def push(
    directory: Path = typer.Argument(Path("."), help="The model directory (with cog.yaml).", show_default=False),
    model: str = typer.Option(..., "--model", "-m", help="The model to push to, as OWNER/NAME."),
    create: bool = typer.Option(False, "--create", help="Create the model (private, cpu) if it does not exist."),
    timeout: float = typer.Option(1800.0, "--timeout", help="Seconds to wait for the build."),
    base_url: str = BaseUrlOption,
    token: str = TokenOption,
) -> None:
    """Push a Cog model: pack DIR (honouring .cogignore / .dockerignore), build it on the server, print the version."""
    from cogport.build import packing

    owner, _, name = model.partition("/")
    if not owner or not name or "/" in name:
        err.print(f"[red]error[/red]: --model must look like OWNER/NAME, got {escape(repr(model))}")
        raise typer.Exit(2)
    root = directory.resolve()
    if not (root / "cog.yaml").is_file():
        err.print(f"[red]error[/red]: {escape(str(root))} has no cog.yaml")
        raise typer.Exit(2)
    client = Client(base_url, token, timeout=300.0)
    if create:
        _ensure_model(client, owner, name)
    started = time.monotonic()
    files = packing.model_files(root)
    archive = packing.pack_bytes(root, files)
    err.print(f"Uploading {escape(str(root))} ({len(files)} files, {_size(len(archive))}) to {owner}/{name}")
    try:
        build = client.request(
            "POST",
            f"/v1/models/{owner}/{name}/versions",
            files={"source": ("model.tar.gz", archive, "application/gzip")},
        )
    except ApiError as exc:
        if exc.status == 404:
            err.print(f"[red]error[/red]: there is no model {owner}/{name}; create it first, or pass --create")
            raise typer.Exit(1) from exc
        raise
    build = _follow(client, build, timeout)
    elapsed = time.monotonic() - started
    if build["status"] != "succeeded":
        error = build.get("error") or "no error message"
        if f"error: {error}" in (build.get("logs") or ""):  # the log just shown ends with it: once is enough
            err.print(f"[red]Build failed[/red] after {elapsed:.1f}s (the error is above)")
        else:
            err.print(f"[red]Build failed[/red] after {elapsed:.1f}s: {escape(error)}")
        raise typer.Exit(1)
    err.print(f"[green]Pushed[/green] {owner}/{name} in {elapsed:.1f}s; version:")
    typer.echo(build["version"])


def _ensure_model(client: Client, owner: str, name: str) -> None:
    try:
        client.request("GET", f"/v1/models/{owner}/{name}")
    except ApiError as exc:
        if exc.status != 404:
            raise
        body = {"owner": owner, "name": name, "visibility": "private", "hardware": "cpu"}
        client.request("POST", "/v1/models", json=body)
        err.print(f"Created the model {owner}/{name} (private, cpu)")


def _follow(client: Client, build: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Poll the build, printing new log text as it arrives, until it finishes."""
    shown = 0
    status = None
    deadline = time.monotonic() + timeout
    while True:
        if build["status"] != status:
            status = build["status"]
            if status in ("starting", "processing"):
                err.print(f"Build {build['id']}: {status}")
        logs = build.get("logs") or ""
        if len(logs) > shown:
            sys.stderr.write(logs[shown:])
            sys.stderr.flush()
            shown = len(logs)
        if status in ("succeeded", "failed"):
            return build
        if time.monotonic() > deadline:
            err.print(f"[red]error[/red]: the build did not finish within {timeout:.0f}s (it goes on: {build['id']})")
            raise typer.Exit(1)
        time.sleep(POLL_INTERVAL)
        build = client.request("GET", f"/v1/builds/{build['id']}")


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"

"""``cogport predictions``, ``models``, ``deployments`` and ``instances``: the API's resources as tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cogport.cli.client import BaseUrlOption, Client, TokenOption, handle_errors, print_json

predictions_app = typer.Typer(help="List, inspect and cancel predictions.", no_args_is_help=True)
models_app = typer.Typer(help="List and inspect models.", no_args_is_help=True)
deployments_app = typer.Typer(help="Manage deployments.", no_args_is_help=True)
JsonOption = typer.Option(False, "--json", help="Print the API's JSON.")
PIPE_WIDTH = 100_000
"""The width of tables when stdout is no terminal (a pipe, a file): as wide as their widest row, never
wrapped, whatever ``COLUMNS`` says (rich's default there is 80), so that ids and names stay whole for
``grep``, ``cut`` and ``awk``."""


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=PIPE_WIDTH)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, show_lines=False)
    for i, column in enumerate(columns):
        table.add_column(column, overflow="fold", no_wrap=i == 0)  # ids and names stay whole, for copying
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    _console().print(table)


def _fields(title: str, item: dict[str, Any], keys: list[str]) -> None:
    _table(title, ["field", "value"], [[key, _short(item.get(key))] for key in keys])


def _emit(value: Any, json_out: bool, render: Callable[[], None]) -> None:
    """The API's JSON with --json, else the human-readable rendering."""
    if json_out:
        print_json(value)
    else:
        render()


def _short(value: Any, limit: int = 200) -> str:
    text = "" if value is None else value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _split(ref: str) -> tuple[str, str]:
    owner, sep, name = ref.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise typer.BadParameter("expected OWNER/NAME", param_hint="OWNER/NAME")
    return owner, name


def _all(client: Client, path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Every result of a paginated list, following ``next`` (up to ``limit`` results)."""
    results: list[dict[str, Any]] = []
    url: str | None = path
    while url and (limit is None or len(results) < limit):
        page = client.request("GET", url)
        results.extend(page["results"])
        url = page.get("next")
    return results if limit is None else results[:limit]


# predictions


@predictions_app.command("list")
@handle_errors
def list_predictions(
    limit: int = typer.Option(50, "--limit", help="At most this many (newest first)."),
    json_out: bool = JsonOption,
    base_url: str = BaseUrlOption,
    token: str = TokenOption,
) -> None:
    """List your predictions, newest first."""
    results = _all(Client(base_url, token), "/v1/predictions", limit)
    rows = [[p["id"], p.get("model"), p["status"], p.get("created_at"), p.get("source")] for p in results]
    _emit(results, json_out, lambda: _table("predictions", ["id", "model", "status", "created", "source"], rows))


@predictions_app.command("get")
@handle_errors
def get_prediction(
    prediction_id: str = typer.Argument(..., metavar="ID"),
    json_out: bool = JsonOption,
    base_url: str = BaseUrlOption,
    token: str = TokenOption,
) -> None:
    """Show one prediction."""
    prediction = Client(base_url, token).request("GET", f"/v1/predictions/{prediction_id}")
    keys = ["id", "model", "version", "status", "input", "output", "error", "created_at", "completed_at"]
    _emit(prediction, json_out, lambda: _fields(f"prediction {prediction_id}", prediction, keys))


@predictions_app.command("cancel")
@handle_errors
def cancel_prediction(
    prediction_id: str = typer.Argument(..., metavar="ID"),
    json_out: bool = JsonOption,
    base_url: str = BaseUrlOption,
    token: str = TokenOption,
) -> None:
    """Cancel a prediction."""
    prediction = Client(base_url, token).request("POST", f"/v1/predictions/{prediction_id}/cancel")
    _emit(prediction, json_out, lambda: typer.echo(f"prediction {prediction['id']}: {prediction['status']}"))


# models


@models_app.command("list")
@handle_errors
def list_models(
    limit: int = typer.Option(100, "--limit", help="At most this many."),
    json_out: bool = JsonOption,
    base_url: str = BaseUrlOption,
    token: str = TokenOption,
) -> None:
    """List public models (as Replicate's API does)."""
    results = _all(Client(base_url, token), "/v1/models", limit)
    rows = [
        [
            f"{m['owner']}/{m['name']}",
            m.get("visibility"),
            (m.get("latest_version") or {}).get("id"),
            m.get("run_count"),
        ]
        for m in results
    ]
    _emit(results, json_out, lambda: _table("models", ["model", "visibility", "latest version", "runs"], rows))


@models_app.command("get")
@handle_errors
def get_model(
    ref: str = typer.Argument(..., metavar="OWNER/NAME"),
    json_out: bool = JsonOption,
    base_url: str = BaseUrlOption,
    token: str = TokenOption,
) -> None:
    """Show one model."""
    owner, name = _split(ref)
    model = Client(base_url, token).request("GET", f"/v1/models/{owner}/{name}")
    shown = {**model, "latest_version": (model.get("latest_version") or {}).get("id")}
    keys = ["owner", "name", "description", "visibility", "latest_version", "run_count", "url"]
    _emit(model, json_out, lambda: _fields(f"model {owner}/{name}", shown, keys))


# deployments


def _deployment_rows(deployments: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for d in deployments:
        release = d.get("current_release") or {}
        config = release.get("configuration") or {}
        rows.append(
            [
                f"{d['owner']}/{d['name']}",
                release.get("model"),
                release.get("version"),
                config.get("hardware"),
                config.get("min_instances"),
                config.get("max_instances"),
                release.get("number"),
            ]
        )
    return rows


_DEPLOYMENT_COLUMNS = ["deployment", "model", "version", "hardware", "min", "max", "release"]


def _show_deployment(deployment: dict[str, Any], json_out: bool) -> None:
    _emit(deployment, json_out, lambda: _table("deployment", _DEPLOYMENT_COLUMNS, _deployment_rows([deployment])))


@deployments_app.command("list")
@handle_errors
def list_deployments(json_out: bool = JsonOption, base_url: str = BaseUrlOption, token: str = TokenOption) -> None:
    """List your deployments."""
    results = _all(Client(base_url, token), "/v1/deployments")
    _emit(results, json_out, lambda: _table("deployments", _DEPLOYMENT_COLUMNS, _deployment_rows(results)))


@deployments_app.command("get")
@handle_errors
def get_deployment(
    ref: str = typer.Argument(..., metavar="OWNER/NAME"),
    json_out: bool = JsonOption,
    base_url: str = BaseUrlOption,
    token: str = TokenOption,
) -> None:
    """Show one deployment and its current release."""
    owner, name = _split(ref)
    _show_deployment(Client(base_url, token).request("GET", f"/v1/deployments/{owner}/{name}"), json_out)


@deployments_app.command("create")
@handle_errors
def create_deployment(
    name: str = typer.Argument(..., metavar="NAME", help="The deployment's name (or OWNER/NAME)."),
    model: str = typer.Option(..., "--model", help="The model, OWNER/NAME."),
    version: str = typer.Option(..., "--version", help="The version id."),
    hardware: str = typer.Option("cpu", "--hardware", help="The hardware SKU (see /v1/hardware)."),
    min_instances: int = typer.Option(0, "--min-instances"),
    max_instances: int = typer.Option(1, "--max-instances"),
    json_out: bool = JsonOption,
    base_url: str = BaseUrlOption,
    token: str = TokenOption,
) -> None:
    """Create a deployment of a model's version."""
    body = {
        "name": name,
        "model": model,
        "version": version,
        "hardware": hardware,
        "min_instances": min_instances,
        "max_instances": max_instances,
    }
    _show_deployment(Client(base_url, token).request("POST", "/v1/deployments", json=body), json_out)


@deployments_app.command("update")
@handle_errors
def update_deployment(
    ref: str = typer.Argument(..., metavar="OWNER/NAME"),
    version: str | None = typer.Option(None, "--version", help="The new version id."),
    hardware: str | None = typer.Option(None, "--hardware"),
    min_instances: int | None = typer.Option(None, "--min-instances"),
    max_instances: int | None = typer.Option(None, "--max-instances"),
    json_out: bool = JsonOption,
    base_url: str = BaseUrlOption,
    token: str = TokenOption,
) -> None:
    """Make a new release of a deployment with what changes."""
    owner, name = _split(ref)
    changes = {
        key: value
        for key, value in {
            "version": version,
            "hardware": hardware,
            "min_instances": min_instances,
            "max_instances": max_instances,
        }.items()
        if value is not None
    }
    if not changes:
        raise typer.BadParameter("nothing to change: give --version, --hardware, --min-instances or --max-instances")
    updated = Client(base_url, token).request("PATCH", f"/v1/deployments/{owner}/{name}", json=changes)
    _show_deployment(updated, json_out)


# instances


@handle_errors
def instances(
    deployment: str | None = typer.Option(None, "--deployment", help="Only this deployment's (OWNER/NAME)."),
    json_out: bool = JsonOption,
    base_url: str = BaseUrlOption,
    token: str = TokenOption,
) -> None:
    """The instances running now: every one (admin), or one deployment's."""
    client = Client(base_url, token)
    if deployment:
        owner, name = _split(deployment)
        answer = client.request("GET", f"/v1/deployments/{owner}/{name}/instances")
    else:
        answer = client.request("GET", "/admin/v1/instances")
    rows = [
        [
            i["id"],
            i.get("pool", deployment),
            i["state"],
            i["hardware"],
            i.get("node"),
            ",".join(map(str, i["gpus"])),
            i.get("started_at"),
        ]
        for i in answer["results"]
    ]
    title = "instances" + (f" (queued: {answer['queued']})" if "queued" in answer else "")
    _emit(answer, json_out, lambda: _table(title, ["id", "pool", "state", "hardware", "node", "gpus", "started"], rows))

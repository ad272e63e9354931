"""``cogport run``: a prediction from the command line, like ``cog predict`` but through the HTTP API."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import typer

from cogport.cli.client import BaseUrlOption, Client, TokenOption, err, handle_errors, print_json

TERMINAL = {"succeeded", "failed", "canceled", "aborted"}


def parse_inputs(client: Client, pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs: JSON when the value parses as JSON, else a string; ``@path`` uploads a file."""
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not key=value", param_hint="-i")
        if raw.startswith("@"):
            inputs[key] = upload(client, Path(raw[1:]))
            continue
        try:
            inputs[key] = json.loads(raw)
        except ValueError:
            inputs[key] = raw
    return inputs


def upload(client: Client, path: Path) -> str:
    if not path.is_file():
        raise typer.BadParameter(f"no such file: {path}", param_hint="-i")
    with path.open("rb") as handle:
        created = client.request("POST", "/v1/files", files={"content": (path.name, handle)})
    url: str = created["urls"]["get"]
    return url


def parse_ref(ref: str) -> tuple[str, str, str | None]:
    match = re.fullmatch(r"([^/:\s]+)/([^/:\s]+)(?::([^/:\s]+))?", ref)
    if not match:
        raise typer.BadParameter("expected OWNER/NAME or OWNER/NAME:VERSION", param_hint="MODEL")
    return match.group(1), match.group(2), match.group(3)


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs from server-sent event lines."""
    event, data = "message", list[str]()
    for line in lines:
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", list[str]()
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)


def stream(client: Client, prediction: dict[str, Any]) -> None:
    """Print output as it arrives (stdout) and logs (stderr) until the stream's ``done``."""
    printed = False
    with client.http.stream(
        "GET", prediction["urls"]["stream"], headers={"Accept": "text/event-stream"}, timeout=None
    ) as response:
        for event, data in sse_events(response.iter_lines()):
            if event == "output":
                if not _is_file_url(client, data):
                    typer.echo(data, nl=False)
                    printed = True
            elif event == "logs":
                err.print(data, markup=False, highlight=False)
            elif event in ("error", "done"):
                break
    if printed:
        typer.echo("")


def wait(client: Client, prediction: dict[str, Any], quiet: bool, poll: float = 0.5) -> dict[str, Any]:
    """Poll until the prediction is over, printing new log text to stderr (unless quiet)."""
    shown = 0
    with err.status(f"[bold]{prediction['id']}[/bold] {prediction['status']}") as status:
        while True:
            logs = prediction.get("logs") or ""
            if not quiet and len(logs) > shown:
                err.print(logs[shown:].rstrip("\n"), markup=False, highlight=False)
                shown = len(logs)
            if prediction["status"] in TERMINAL:
                return prediction
            status.update(f"[bold]{prediction['id']}[/bold] {prediction['status']}")
            time.sleep(poll)
            prediction = client.request("GET", f"/v1/predictions/{prediction['id']}")


def _is_file_url(client: Client, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    base = str(client.http.base_url).rstrip("/")
    return value.startswith(base + "/") or value.startswith("data:")


def _files(client: Client, output: Any) -> list[str]:
    if isinstance(output, list):
        return [item for item in output if _is_file_url(client, item)]
    return [output] if _is_file_url(client, output) else []


def download(client: Client, url: str, directory: Path, index: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    response = client.http.get(url, follow_redirects=True)
    response.raise_for_status()
    name = ""
    disposition = response.headers.get("content-disposition", "")
    found = re.search(r"filename\*?=(?:UTF-8'')?\"?([^\";]+)\"?", disposition)
    if found:
        name = unquote(found.group(1))
    if not name and not url.startswith("data:"):
        name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    name = Path(name).name or f"output{index}"
    target = directory / name
    stem, suffix, n = target.stem, target.suffix, 1
    while target.exists():
        target = directory / f"{stem}-{n}{suffix}"
        n += 1
    target.write_bytes(response.content)
    return target


def show_output(client: Client, output: Any, output_dir: Path, streamed: bool) -> None:
    files = _files(client, output)
    if files:
        for i, url in enumerate(files):
            typer.echo(str(download(client, url, output_dir, i)))
        return
    if streamed or output is None:
        return
    if isinstance(output, str):
        typer.echo(output)
    elif isinstance(output, list) and all(isinstance(item, str) for item in output):
        typer.echo("".join(output))
    else:
        print_json(output)


@handle_errors
def run(
    model: str = typer.Argument(..., metavar="OWNER/NAME[:VERSION]", help="The model, optionally a version of it."),
    inputs: list[str] = typer.Option(
        [], "-i", "--input", help="An input, key=value (JSON when it parses, else text; @path uploads a file)."
    ),
    output_dir: Path = typer.Option(Path("."), "--output-dir", "-o", help="Where file outputs are saved."),
    json_out: bool = typer.Option(False, "--json", help="Print the finished prediction as JSON."),
    no_stream: bool = typer.Option(False, "--no-stream", help="Wait for the output instead of streaming it."),
    base_url: str = BaseUrlOption,
    token: str = TokenOption,
) -> None:
    """Run a prediction and print its output; file outputs are downloaded."""
    owner, name, version = parse_ref(model)
    client = Client(base_url, token, timeout=120)
    body: dict[str, Any] = {"input": parse_inputs(client, inputs)}
    if version:
        body["version"] = version
        path = "/v1/predictions"
    else:
        path = f"/v1/models/{owner}/{name}/predictions"
    streaming = bool(not json_out and not no_stream)
    headers = {} if streaming else {"Prefer": "wait"}
    prediction = client.request("POST", path, json=body, headers=headers)
    streamed = False
    try:
        if streaming and prediction.get("urls", {}).get("stream") and prediction["status"] not in TERMINAL:
            stream(client, prediction)
            streamed = True
            prediction = client.request("GET", f"/v1/predictions/{prediction['id']}")
        prediction = wait(client, prediction, quiet=json_out or streamed)
    except KeyboardInterrupt:
        # Ctrl-C cancels the prediction rather than leaving it running on the server
        client.request("POST", f"/v1/predictions/{prediction['id']}/cancel")
        err.print(f"canceled prediction {prediction['id']}", highlight=False)
        raise typer.Exit(130) from None
    if json_out:
        print_json(prediction)
    elif prediction["status"] == "succeeded":
        show_output(client, prediction.get("output"), output_dir, streamed)
    if prediction["status"] != "succeeded":
        detail = prediction.get("error") or prediction["status"]
        err.print(f"[red]prediction {prediction['id']} {prediction['status']}[/red]: {detail}", highlight=False)
        raise typer.Exit(1)

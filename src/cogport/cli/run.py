"""``cogport run``: a prediction from the command line, like ``cog predict`` but through the HTTP API."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import typer
from rich.markup import escape

from cogport.cli.client import BaseUrlOption, Client, TokenOption, err, handle_errors, print_json
from cogport.core.backoff import nth

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


@dataclass(frozen=True)
class Event:
    name: str
    data: str
    id: str | None


def sse_events(lines: Iterator[str]) -> Iterator[Event]:
    """Server-sent events from their lines. An event is complete at its blank line: one cut off by the end
    of the lines (a dropped connection) is dropped, as the SSE spec says, and comes again on resuming."""
    name, data, event_id = "message", list[str](), None
    for line in lines:
        if line == "":
            if data:
                yield Event(name, "\n".join(data), event_id)
            name, data = "message", list[str]()
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            elif field == "id" and "\x00" not in value:
                event_id = value


@dataclass
class Shown:
    """What the user has seen of a prediction: output chunks (file URLs counted, not printed: they are
    downloaded at the end), characters of its logs, and whether any output text went to stdout."""

    outputs: int = 0
    log_chars: int = 0
    text: bool = False

    def output(self, client: Client, chunk: Any) -> None:
        self.outputs += 1
        if not _is_file_url(client, chunk):
            typer.echo(chunk if isinstance(chunk, str) else json.dumps(chunk), nl=False)
            self.text = True

    def logs(self, text: str) -> None:
        if text:
            err.print(text.removesuffix("\n"), markup=False, highlight=False)
        self.log_chars += len(text)


RECONNECTS = 5
"""Attempts to resume a stream, in a row without an event between them, before falling back to polling."""
BACKOFF = 0.25
"""Seconds before the first attempt; each further one waits twice as long (0.25 + 0.5 + ... = 7.75 s)."""
CANCEL_TIMEOUT = 30.0
"""Seconds a cancel asked with Ctrl-C may take (the server answers it within about 5 s)."""
STREAM_TIMEOUT = httpx.Timeout(10.0, read=60.0)
"""The server sends a keepalive comment at least every 15 s: a minute of silence is a dead connection."""


def stream(client: Client, prediction: dict[str, Any], shown: Shown) -> bool:
    """Print output as it arrives (stdout) and logs (stderr) until the stream's ``done``; ``True`` then.

    A connection that drops before ``done`` is resumed with ``Last-Event-ID``, so nothing is lost or
    printed twice; ``False`` when it cannot be (the stream is gone, or ``RECONNECTS`` attempts in a row
    got no event), for the caller to poll the prediction instead."""
    last_id: str | None = None
    failures = 0
    while True:
        ended, new_id = _connect(client, prediction["urls"]["stream"], last_id, shown)
        if ended is not None:
            return ended
        if new_id != last_id:  # it got somewhere: a fresh set of attempts
            last_id, failures = new_id, 0
        if failures == RECONNECTS:
            return False
        time.sleep(nth(BACKOFF, math.inf, failures + 1))
        failures += 1


def _connect(client: Client, url: str, last_id: str | None, shown: Shown) -> tuple[bool | None, str | None]:
    """One connection to the stream, from after ``last_id``: ``(True, id)`` at ``done``, ``(False, id)``
    when there is no stream to resume, ``(None, id)`` when it ended, dropped or could not connect before
    ``done``; ``id`` is the last event's."""
    headers = {"Accept": "text/event-stream"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    try:
        with client.http.stream("GET", url, headers=headers, timeout=STREAM_TIMEOUT) as response:
            if response.status_code != 200:
                # no stream (any more); a 5xx may be a proxy in front while the server restarts
                return (None if response.status_code >= 500 else False), last_id
            for event in sse_events(response.iter_lines()):
                last_id = event.id or last_id
                if event.name == "output":
                    shown.output(client, event.data)
                elif event.name == "logs":
                    # whole lines without their last newline (but for the very end, which ``done``
                    # follows at once: a count one off there is never used)
                    shown.logs(event.data + "\n")
                elif event.name in ("error", "done"):
                    return True, last_id
    except httpx.TransportError:
        pass  # dropped, refused, or silent for longer than the server's keepalives allow
    return None, last_id


def wait(
    client: Client, prediction: dict[str, Any], quiet: bool, shown: Shown | None = None, poll: float = 0.5
) -> dict[str, Any]:
    """Poll until the prediction is over, printing new log text to stderr (unless quiet). With ``shown``
    (a stream that was lost), new output chunks too, after what the stream printed."""
    shown_logs = shown.log_chars if shown else 0
    with err.status(f"[bold]{prediction['id']}[/bold] {prediction['status']}") as status:
        while True:
            logs = prediction.get("logs") or ""
            if not quiet and len(logs) > shown_logs:
                err.print(logs[shown_logs:].rstrip("\n"), markup=False, highlight=False)
                shown_logs = len(logs)
            if shown is not None:
                for chunk in _chunks(prediction.get("output"))[shown.outputs :]:
                    shown.output(client, chunk)
            if prediction["status"] in TERMINAL:
                return prediction
            status.update(f"[bold]{prediction['id']}[/bold] {prediction['status']}")
            time.sleep(poll)
            prediction = client.request("GET", f"/v1/predictions/{prediction['id']}")


def _chunks(output: Any) -> list[Any]:
    if output is None:
        return []
    return list(output) if isinstance(output, list) else [output]


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
            shown, streamed = Shown(), True
            ended = stream(client, prediction, shown)
            if not ended:
                err.print("[yellow]the stream was lost: polling for the rest[/yellow]", highlight=False)
            prediction = client.request("GET", f"/v1/predictions/{prediction['id']}")
            prediction = wait(client, prediction, quiet=ended, shown=None if ended else shown)
            if shown.text:
                typer.echo("")
        else:
            prediction = wait(client, prediction, quiet=json_out)
    except KeyboardInterrupt:
        # Ctrl-C cancels the prediction rather than leaving it running on the server
        # Within CANCEL_TIMEOUT: a user who pressed Ctrl-C waits seconds, not the client's two minutes.
        client.request("POST", f"/v1/predictions/{prediction['id']}/cancel", timeout=CANCEL_TIMEOUT)
        err.print(f"canceled prediction {prediction['id']}", highlight=False)
        raise typer.Exit(130) from None
    if json_out:
        print_json(prediction)
    elif prediction["status"] == "succeeded":
        show_output(client, prediction.get("output"), output_dir, streamed)
    if prediction["status"] != "succeeded":
        detail = prediction.get("error") or prediction["status"]
        err.print(f"[red]prediction {prediction['id']} {prediction['status']}[/red]: {escape(detail)}", highlight=False)
        raise typer.Exit(1)

"""``cogport serve``: run the API server."""

from __future__ import annotations

import gc
import signal
from pathlib import Path
from types import FrameType

import typer


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(
    host: str | None = typer.Option(None, "--host", help="Interface to listen on [default: 127.0.0.1]."),
    port: int | None = typer.Option(None, "--port", help="Port to listen on (0: any free port) [default: 8000]."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Where the database and files live."),
    proxy_headers: bool = typer.Option(False, "--proxy-headers", help="Trust X-Forwarded-* headers from 127.0.0.1."),
) -> None:
    """Start the cogport server (SQLite and local files by default)."""
    # The imports and the app below make some 200,000 objects that live as long as the process. The cyclic
    # garbage collector would go over them again and again meanwhile (a tenth of the start's CPU), and at
    # every full collection after: collect nothing until the app is built, then set them aside (gc.freeze).
    gc.disable()
    from pydantic import ValidationError

    from cogport.settings import Settings

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "settings"
            typer.echo(f"cogport: invalid setting {field}: {error['msg']}", err=True)
        raise typer.Exit(2) from None

    import uvicorn

    from cogport import logs
    from cogport.app import create_app

    logs.configure(settings)
    app = create_app(settings)
    gc.freeze()
    gc.enable()
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal to the handler it found
    # installed; make that handler a clean exit, so that a stopped server reports success (0).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        proxy_headers=proxy_headers,
        forwarded_allow_ips="127.0.0.1" if proxy_headers else None,
        timeout_graceful_shutdown=10,
        log_config=None,  # logging is configured once, by cogport.logs
        access_log=False,  # cogport.access is the request log (one line per request, route templates)
        ws="none",  # no WebSocket routes (streams are SSE): uvicorn need not import a WebSocket library at start
    )

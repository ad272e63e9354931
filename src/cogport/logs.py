"""Logging, configured in one place (``cogport serve`` calls :func:`configure`; an embedding program
configures logging its own way and gets the same records).

``COGPORT_LOG_FORMAT=text`` (default): ``<time> <level> <logger>: <message>``; ``json``: one JSON object
per line (``time``, ``level``, ``logger``, ``message``). Request log lines (``cogport.access``) are
already formatted by :mod:`cogport.api.access` and are written as they are (after the time in text).

Failures that repeat (every request while the database is down, every round of a background loop) go
through :func:`failure`: one line per distinct failure per ``FAILURE_WINDOW`` seconds, saying how many
repeats the previous window held; a traceback only with the first line of a failure that is not a known
fault (a bug), never for an outage.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime

from cogport.settings import Settings

__all__ = ["FAILURE_WINDOW", "JsonFormatter", "TextFormatter", "configure", "failure"]


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if hasattr(record, "access"):
            return record.getMessage()  # a JSON object already
        body = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body)


def configure(settings: Settings) -> None:
    """One handler on the root logger, in the configured format; uvicorn's loggers propagate to it (and
    its access log is off: ``cogport.access`` is the request log)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True


FAILURE_WINDOW = 60.0
"""Seconds during which repeats of one failure are counted, not logged."""


class _Seen:
    __slots__ = ("logged_at", "repeats")

    def __init__(self, logged_at: float) -> None:
        self.logged_at = logged_at
        self.repeats = 0


_failures: dict[tuple[str, str], _Seen] = {}
_failures_lock = threading.Lock()


def failure(
    logger: logging.Logger,
    key: str,
    message: str,
    *,
    exc: BaseException | None = None,
    traceback: bool = False,
    level: int = logging.ERROR,
) -> bool:
    """Log ``message`` unless the failure ``key`` was logged less than ``FAILURE_WINDOW`` seconds ago (then
    count it); ``traceback``: with ``exc``'s traceback (the first time only). True when a line was written."""
    now = time.monotonic()
    with _failures_lock:
        seen = _failures.get((logger.name, key))
        if seen is not None and now - seen.logged_at < FAILURE_WINDOW:
            seen.repeats += 1
            return False
        repeats = seen.repeats if seen is not None else 0
        _failures[(logger.name, key)] = _Seen(now)
        if len(_failures) > 1000:  # distinct keys are few; never let them grow without bound
            for old in [k for k, v in _failures.items() if now - v.logged_at >= FAILURE_WINDOW]:
                del _failures[old]
    if repeats:
        message = f"{message} (repeated {repeats} times since it was last logged)"
    logger.log(level, message, exc_info=exc if traceback and seen is None else None)
    return True

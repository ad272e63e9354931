"""Logging, configured in one place (``cogport serve`` calls :func:`configure`; an embedding program
configures logging its own way and gets the same records).

``COGPORT_LOG_FORMAT=text`` (default): ``<time> <level> <logger>: <message>``; ``json``: one JSON object
per line (``time``, ``level``, ``logger``, ``message``). Request log lines (``cogport.access``) are
already formatted by :mod:`cogport.api.access` and are written as they are (after the time in text).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from cogport.settings import Settings

__all__ = ["JsonFormatter", "TextFormatter", "configure"]


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

"""coglet's own log: JSON lines on stdout/stderr, kept as a bounded tail for error messages.

Each line looks like ``{"timestamp", "level", "fields": {"message", ...}, "target"}``. The model's
output during setup arrives with target ``coglet::setup``; output the per-prediction capture misses
(subprocesses, raw fd writes, anything once a worker is dying) arrives as ``coglet::user``, without a
prediction id. Such a line is the prediction's when exactly one prediction is listened to (every instance of
concurrency 1): a program the model ran that failed (``ffmpeg``, a binary missing a shared library, exit
status 127) then says why in the prediction's own logs, as it would in a container's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MODEL_TARGETS = frozenset({"coglet::setup", "coglet::user"})
TAIL_LINES = 200
_ROUTINE_TARGET = '"target":"coglet::prediction"}'
"""How coglet ends its lines about a prediction: its two routine ones ("Starting prediction", "Prediction worker
completed") and what the model prints while predicting, which also has a ``source`` field."""
_ROUTINE_LEVEL = '"level":"INFO"'
_SOURCE = '"source":'
"""The key of the model's own lines; a message cannot hold it unescaped (quotes in a JSON string are escaped)."""


@dataclass(frozen=True)
class LogLine:
    level: str
    target: str
    message: str
    error: str | None = None
    source: str | None = None
    """``Stdout``/``Stderr`` for lines the model printed while predicting."""
    prediction_id: str | None = None

    @property
    def from_model(self) -> bool:
        """Written by the model's code rather than by coglet itself."""
        return self.target in MODEL_TARGETS or self.source is not None

    def render(self) -> str:
        text = self.message if self.from_model else f"[{self.target}] {self.message}"
        return f"{text}: {self.error}" if self.error else text


def parse_line(raw: str) -> LogLine:
    """One line of coglet output; anything that is not its JSON shape is kept as a plain message."""
    try:
        record = json.loads(raw)
        fields = record["fields"]
        error = fields.get("error")
        source = fields.get("source")
        prediction_id = fields.get("prediction_id")
        return LogLine(
            level=str(record.get("level", "INFO")),
            target=str(record.get("target", "")),
            message=str(fields.get("message", "")),
            error=str(error) if error is not None else None,
            source=str(source) if source is not None else None,
            prediction_id=str(prediction_id) if prediction_id is not None else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return LogLine(level="INFO", target="coglet::user", message=raw)


class LogTail:
    """The last lines an instance wrote, plus everything the model printed during setup."""

    def __init__(self, name: str, maxlen: int = TAIL_LINES) -> None:
        self.name = name
        self._lines: deque[LogLine] = deque(maxlen=maxlen)
        self._setup: deque[str] = deque(maxlen=maxlen)
        self.setup_done = False
        self._listeners: dict[str, Callable[[str], None]] = {}
        self.milestone = asyncio.Event()
        """Set on each line from coglet's top-level target (start-up milestones: ready, failed)."""

    def add(self, raw: str) -> None:
        """Take one line coglet wrote. Its routine lines about each prediction (INFO, target
        ``coglet::prediction``) are neither parsed nor kept unless debug logging is on: nothing shows them
        (:meth:`tail` keeps the model's lines, warnings and errors) or waits for them."""
        routine = raw.endswith(_ROUTINE_TARGET) and _ROUTINE_LEVEL in raw and _SOURCE not in raw
        if routine and not log.isEnabledFor(logging.DEBUG):
            return
        line = parse_line(raw)
        self._lines.append(line)
        if not self.setup_done and line.target in MODEL_TARGETS:
            self._setup.append(line.message)
        if line.target == "coglet":
            self.milestone.set()
        if line.prediction_id is not None and line.source is not None:
            listener = self._listeners.get(line.prediction_id)
            if listener is not None:
                listener(line.message + "\n")
        elif line.target == "coglet::user" and self.setup_done and len(self._listeners) == 1:
            next(iter(self._listeners.values()))(line.message + "\n")  # fd-level output: see the docstring
        if log.isEnabledFor(logging.DEBUG):  # render() builds the text: two lines a prediction, most unlogged
            log.debug("[%s] %s", self.name, line.render())

    def listen(self, prediction_id: str, listener: Callable[[str], None]) -> None:
        """Pass each line the model prints for ``prediction_id`` (with its newline) to ``listener``."""
        self._listeners[prediction_id] = listener

    def unlisten(self, prediction_id: str) -> None:
        self._listeners.pop(prediction_id, None)

    def setup_output(self) -> str:
        """What the model printed before it became READY (or failed to)."""
        return "".join(f"{m}\n" for m in self._setup)

    def tail(self, count: int = 20) -> str:
        """The last ``count`` lines worth showing a user: the model's output, warnings and errors."""
        lines = [line.render() for line in self._lines if line.from_model or line.level in ("WARN", "ERROR")]
        return "\n".join(lines[-count:])

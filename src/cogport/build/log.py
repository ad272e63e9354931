"""A build's log: lines appended by the build, read (and saved) by whoever runs it."""

from __future__ import annotations

import time


class BuildLog:
    def __init__(self, text: str = "") -> None:
        self._parts: list[str] = [text] if text else []
        self.version = 0
        """Bumped on every write, so a saver can tell whether there is something new."""
        self._started = time.monotonic()

    def line(self, text: str) -> None:
        self._parts.append(text if text.endswith("\n") else text + "\n")
        self.version += 1

    def step(self, text: str) -> None:
        """A headline, like Docker's ``#5 [3/6] RUN ...``: ``[  1.2s] text``."""
        self.line(f"[{time.monotonic() - self._started:6.2f}s] {text}")

    @property
    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

"""Yields a token, then is quiet for ``seconds`` (sleeping in small steps, so a cancel stops it), then
yields another: a run that streams and is then silent, for ``python -m bench crowds``."""

import time
from collections.abc import Iterator

from cog import BaseRunner, Input


class Runner(BaseRunner):
    def run(self, seconds: float = Input(default=600.0, ge=0.0, le=86400.0)) -> Iterator[str]:
        print("started", flush=True)
        yield "first "
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
        yield "last"

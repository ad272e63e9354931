"""Yields ``count`` tokens, each the wall-clock time (``time.time_ns()``) at which it was yielded.

``lead``: seconds to wait before the first token (so the client's stream is connected before it comes);
``interval``: seconds between tokens (so each one travels on its own).
"""

import time
from collections.abc import Iterator

from cog import BaseRunner, Input


class Runner(BaseRunner):
    def run(
        self,
        count: int = Input(default=50, ge=1, le=10000),
        interval: float = Input(default=0.01, ge=0.0, le=1.0),
        lead: float = Input(default=0.3, ge=0.0, le=10.0),
    ) -> Iterator[str]:
        time.sleep(lead)
        for i in range(count):
            if i:
                time.sleep(interval)
            yield str(time.time_ns())

"""Doubling backoff: the one schedule cogport's retries wait by.

:func:`doubling` gives the delays a retry loop sleeps between its tries: ``first``, twice that, four times
that, and so on, none over ``cap``, endlessly (the loop decides when to stop, and what it waits on besides
the delay). :func:`nth` is the n-th of those delays, for retries counted elsewhere (a delivery's attempts
in its row, a version's failed starts). No jitter: every user retries one peer of its own (a coglet, the
database, a webhook receiver), not a crowd that would meet again.

Users: the coglet client's cancel and 409 retries (``runtime/coglet_api.py``), a version's restarts
(``runtime/group.py``), the end of a run written again while the database is out (``lifecycle/recorder.py``),
the PostgreSQL notifier reconnecting (``lifecycle/notify.py``), terminal webhooks (``webhooks/sender.py``),
``cogport run`` resuming a stream (``cli/run.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["doubling", "nth"]


def doubling(first: float, cap: float) -> Iterator[float]:
    """``first``, ``2 * first``, ``4 * first``, ... each at most ``cap``, without end."""
    delay = min(first, cap)
    while True:
        yield delay
        delay = min(delay * 2, cap)


def nth(first: float, cap: float, attempt: int) -> float:
    """The ``attempt``-th delay of :func:`doubling` (counted from 1): ``min(first * 2 ** (attempt - 1), cap)``."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, not {attempt}")
    try:
        return min(first * 2.0 ** (attempt - 1), cap)
    except OverflowError:  # 2.0 ** 1024 and beyond: far past any cap
        return cap

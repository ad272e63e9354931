"""The runs of one queue that a dispatcher holds, oldest first, each at most once: :class:`InHand`.

A queue (a version, a kind, a deployment) lives in the ``predictions`` table; the dispatcher reads its oldest
unclaimed runs in batches and claims them from what it holds. Runs created by this very process join what
it holds without a read, but only where that keeps the order: when the last read saw the whole queue
(``complete``). Otherwise older runs are still in the table, unread, and a new one waits for the read that
reaches it, so the oldest run starts first (issue 19).

Each run is held once, by id, whatever arrives while a read is under way (a run created during the read
may come back in the read's rows too): the same run can never be handed to the backend twice from here.
"""

from __future__ import annotations

from collections.abc import Iterable

from cogport.db.tables import Prediction


class InHand:
    def __init__(self) -> None:
        self._runs: dict[str, Prediction] = {}
        self.complete = False
        """Whether the last read saw every queued run of this queue (then new ones join at the end)."""
        self.unread = False
        """A run was queued here since the last read and is not held: the queue must be read again."""
        self._arrivals: list[Prediction] | None = None
        """Runs queued while a read is under way (None: no read is)."""

    def __len__(self) -> int:
        return len(self._runs)

    def __bool__(self) -> bool:
        return bool(self._runs)

    @property
    def due(self) -> bool:
        """Whether there is anything to dispatch: runs held, or runs queued that a read would find."""
        return bool(self._runs) or self.unread

    def add(self, prediction: Prediction) -> None:
        """A run this process just queued (its row is committed)."""
        if self._arrivals is not None:
            self._arrivals.append(prediction)
        elif self.complete:
            self._runs.setdefault(prediction.id, prediction)
        else:
            self.unread = True

    def begin_read(self) -> None:
        """A read of the queue starts: what it returns replaces what is held."""
        self._arrivals = []
        self.unread = False

    def end_read(self, rows: Iterable[Prediction], limit: int) -> None:
        """The read returned ``rows`` (oldest first, at most ``limit``)."""
        arrivals, self._arrivals = self._arrivals or [], None
        runs: dict[str, Prediction] = {}
        for row in rows:
            runs.setdefault(row.id, row)
        self.complete = len(runs) < limit
        self._runs = runs
        if self.complete:
            for prediction in arrivals:  # queued during the read: newer than every row it saw
                runs.setdefault(prediction.id, prediction)
        elif arrivals:
            self.unread = not all(prediction.id in runs for prediction in arrivals)

    def abandon_read(self) -> None:
        """The read failed: nothing is held, and the next round reads again."""
        self._arrivals = None
        self._runs = {}
        self.complete = False
        self.unread = True

    def take(self, count: int) -> list[Prediction]:
        """The ``count`` oldest runs held, which are no longer held."""
        taken: list[Prediction] = []
        for run_id in list(self._runs)[:count]:
            taken.append(self._runs.pop(run_id))
        return taken

    def clear(self) -> None:
        self._runs = {}
        self.complete = False
        self.unread = False

"""Where a run is, as far as this process is concerned: one :class:`Place` per run, owned here.

A run's *status* (starting, processing, succeeded...) is the row's, written through
:mod:`cogport.lifecycle.status`. Its *whereabouts* are this process's: whether it holds the run at all,
and if so, which piece has it now. Every piece that moves a run says so here, and every piece that must
act on a run (a cancel, a deadline, a lease to renew) asks here instead of looking through the others'
sets. A move that the table below does not allow raises :class:`IllegalMove`: a bug, never a user error.

::

    ELSEWHERE ──► CLAIMING ──► HANDING_OVER ◄──► FETCHING
        ▲  └── created claimed ──►  │   │            │
        │   (the sync fast path)    │   ▼            ▼
        │                           │ IN_BACKEND ──► ENDING ──► OVER
        │                           └────────────────►  │
        └── claim lost, server stops while fetching,  ◄─┘ end not written (its claim lapses)

    HANDING_OVER, IN_BACKEND ──► OVER: released (a run created claimed whose row was never written)

=============  ============================================================================  ==================
place          the run is                                                                    may move to
=============  ============================================================================  ==================
ELSEWHERE      not this process's: queued (perhaps in a dispatcher's ``InHand``), another    CLAIMING,
               process's, or never seen                                                      HANDING_OVER
CLAIMING       being claimed (the claim's write is under way; it may find the run taken)     HANDING_OVER,
                                                                                             ELSEWHERE
HANDING_OVER   claimed here and held by the recorder, on its way to the backend (input       FETCHING,
               resolved, weights ensured, ``backend.submit`` awaited)                        IN_BACKEND,
                                                                                             ENDING, OVER
FETCHING       claimed here, its input URLs fetched in a task of its own                     HANDING_OVER,
                                                                                             ENDING, ELSEWHERE
IN_BACKEND     submitted: the backend runs it (or has it waiting for a slot)                 ENDING, OVER
ENDING         its end is being written (by the recorder, after the backend's ``finished``,  OVER, ELSEWHERE
               or because it never reached the backend)
OVER           its end is written here (or given up: created claimed, its row never         nothing
               written)
=============  ============================================================================  ==================

A run leaves for ELSEWHERE when its claim was lost before it was handed over, when the server stops while
its inputs are fetched, or when its end could not be written (its claim lapses: housekeeping, here or in
another process, queues it again or fails it); OVER is terminal: the same
run is never handed over twice by one process (the last ``REMEMBER`` ended runs are remembered to say so).

A stop asked while a run is on its way to the backend (CLAIMING, HANDING_OVER, FETCHING) is remembered
with the run (:meth:`Whereabouts.ask_stop`) and applied where it can be: a fetch ends the run at once, a
hand-over cancels it as soon as the backend has it (:meth:`Whereabouts.submitted`).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from cogport.core.status import Status


class Place(StrEnum):
    ELSEWHERE = "elsewhere"
    CLAIMING = "claiming"
    HANDING_OVER = "handing_over"
    FETCHING = "fetching"
    IN_BACKEND = "in_backend"
    ENDING = "ending"
    OVER = "over"

    @property
    def held(self) -> bool:
        """Claimed by this process (its lease is renewed here)."""
        return self in HELD

    @property
    def on_the_way(self) -> bool:
        """Claimed here and not in the backend yet: a stop asked now is remembered until it can act."""
        return self in ON_THE_WAY


MOVES: dict[Place, frozenset[Place]] = {
    Place.ELSEWHERE: frozenset({Place.CLAIMING, Place.HANDING_OVER}),
    Place.CLAIMING: frozenset({Place.HANDING_OVER, Place.ELSEWHERE}),
    Place.HANDING_OVER: frozenset({Place.FETCHING, Place.IN_BACKEND, Place.ENDING, Place.OVER}),
    Place.FETCHING: frozenset({Place.HANDING_OVER, Place.ENDING, Place.ELSEWHERE}),
    Place.IN_BACKEND: frozenset({Place.ENDING, Place.OVER}),
    Place.ENDING: frozenset({Place.OVER, Place.ELSEWHERE}),
    Place.OVER: frozenset(),
}
"""FROM -> the places a run may move to from there (the module docstring says why each)."""

HELD = frozenset({Place.CLAIMING, Place.HANDING_OVER, Place.FETCHING, Place.IN_BACKEND, Place.ENDING})
ON_THE_WAY = frozenset({Place.CLAIMING, Place.HANDING_OVER, Place.FETCHING})
REMEMBER = 4096
"""Runs ended here that are remembered as OVER (older ones read as ELSEWHERE again)."""


class IllegalMove(RuntimeError):
    """A piece tried to move a run where the table does not allow: a bug in cogport."""

    def __init__(self, run_id: str, at: Place, to: Place) -> None:
        allowed = ", ".join(sorted(MOVES[at])) or "nowhere (it is over)"
        super().__init__(f"run {run_id} is {at}: it cannot move to {to} (from {at} it may move to {allowed})")
        self.run_id = run_id
        self.at = at
        self.to = to


class Whereabouts:
    """The one owner of where each run is (see the module docstring)."""

    def __init__(self, remember: int = REMEMBER) -> None:
        self._places: dict[str, Place] = {}
        """Runs this process holds (every place but ELSEWHERE and OVER)."""
        self._stops: dict[str, Status] = {}
        """How runs on their way to the backend end if stopped there (canceled, or aborted by a deadline);
        forgotten once they leave the way (the backend has them, or they end)."""
        self._over: dict[str, None] = {}
        """Runs ended here, oldest first (at most ``remember``)."""
        self._remember = remember

    def where(self, run_id: str) -> Place:
        place = self._places.get(run_id)
        if place is not None:
            return place
        return Place.OVER if run_id in self._over else Place.ELSEWHERE

    def held(self) -> set[str]:
        """The runs claimed by this process, wherever they are here (their leases are renewed)."""
        return set(self._places)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._places

    def __len__(self) -> int:
        return len(self._places)

    def move(self, run_id: str, to: Place) -> Place:
        """Move ``run_id`` to ``to``; returns where it was. Raises :class:`IllegalMove` (and moves nothing)
        when the table does not allow it."""
        at = self.where(run_id)
        if to not in MOVES[at]:
            raise IllegalMove(run_id, at, to)
        if to not in ON_THE_WAY:
            self._stops.pop(run_id, None)
        if to.held:
            self._places[run_id] = to
        else:
            del self._places[run_id]
            if to is Place.OVER:
                self._over[run_id] = None
                if len(self._over) > self._remember:
                    del self._over[next(iter(self._over))]
        return at

    def claiming(self, run_ids: Iterable[str]) -> None:
        """The dispatcher is about to claim ``run_ids`` (held from before the claim commits, so that no
        housekeeping takes the new claim for a lost one). All or none: one held already raises."""
        ids = list(run_ids)
        for run_id in ids:
            if Place.CLAIMING not in MOVES[self.where(run_id)]:
                raise IllegalMove(run_id, self.where(run_id), Place.CLAIMING)
        for run_id in ids:
            self.move(run_id, Place.CLAIMING)

    def ask_stop(self, run_id: str, end: Status) -> Place:
        """A stop was asked (``end``: canceled, or aborted by a deadline): remembered when the run is on its
        way to the backend (the first stop asked wins). Returns where the run is, for the caller to act."""
        place = self.where(run_id)
        if place.on_the_way:
            self._stops.setdefault(run_id, end)
        return place

    def stop_asked(self, run_id: str) -> Status | None:
        """How the run ends, when a stop was asked while it was on its way to the backend."""
        return self._stops.get(run_id)

    def submitted(self, run_id: str) -> Status | None:
        """``backend.submit`` returned: HANDING_OVER -> IN_BACKEND. Returns the stop asked meanwhile (the
        caller cancels it in the backend). A run that ended meanwhile (the backend finished it during the
        submit, or refused it) stays where it is."""
        if self.where(run_id) in (Place.ENDING, Place.OVER):
            return None
        stop = self._stops.get(run_id)
        self.move(run_id, Place.IN_BACKEND)
        return stop

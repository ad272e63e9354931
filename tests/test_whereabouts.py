"""The whereabouts of runs (:mod:`cogport.lifecycle.whereabouts`) as a state machine, driven by Hypothesis.

The rules are the events the pieces around the owner send (the dispatcher claims, the recorder holds and
ends, a fetch starts and ends, the backend takes a job, the server stops, a cancel or a deadline asks for a
stop), each tried whether or not it is legal where the run is. The model below is written from the story
the module tells, not from its table: every event either does what the story says or raises
:class:`IllegalMove` and changes nothing. Invariants: each run is in exactly one place, the held runs are
exactly the runs in a held place, OVER is terminal, a run reaches the backend at most once per stay, and a
stop asked on the way to the backend is the one the hand-over reports.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cogport.core.status import Status
from cogport.lifecycle.whereabouts import MOVES, IllegalMove, Place, Whereabouts

P = Place
RUNS = ("a", "b", "c")
STORY: set[tuple[Place, Place]] = {
    (P.ELSEWHERE, P.CLAIMING),  # the dispatcher claims it
    (P.ELSEWHERE, P.HANDING_OVER),  # created claimed (the sync fast path): the recorder holds it
    (P.CLAIMING, P.HANDING_OVER),  # claim won: the recorder holds it
    (P.CLAIMING, P.ELSEWHERE),  # claim lost: canceled or taken meanwhile
    (P.HANDING_OVER, P.FETCHING),  # input URLs to fetch
    (P.HANDING_OVER, P.IN_BACKEND),  # backend.submit returned
    (P.HANDING_OVER, P.ENDING),  # never reached the backend (or the backend finished it during the submit)
    (P.HANDING_OVER, P.OVER),  # released: created claimed, its row never written
    (P.FETCHING, P.HANDING_OVER),  # fetched: submitting
    (P.FETCHING, P.ENDING),  # failed, canceled or aborted while fetching
    (P.FETCHING, P.ELSEWHERE),  # the server stops: its claim lapses
    (P.IN_BACKEND, P.ENDING),  # the backend's finished
    (P.IN_BACKEND, P.OVER),  # released
    (P.ENDING, P.OVER),  # its end is written
    (P.ENDING, P.ELSEWHERE),  # its end could not be written: its claim lapses
}
HELD = {P.CLAIMING, P.HANDING_OVER, P.FETCHING, P.IN_BACKEND, P.ENDING}
ON_THE_WAY = {P.CLAIMING, P.HANDING_OVER, P.FETCHING}


def test_the_table_is_the_story() -> None:
    assert {(at, to) for at, tos in MOVES.items() for to in tos} == STORY
    assert set(MOVES) == set(Place)


def test_an_illegal_move_says_where_the_run_is_and_where_it_may_go() -> None:
    places = Whereabouts()
    places.move("r1", Place.HANDING_OVER)
    places.move("r1", Place.IN_BACKEND)
    with pytest.raises(IllegalMove) as info:
        places.move("r1", Place.FETCHING)
    assert (
        str(info.value)
        == "run r1 is in_backend: it cannot move to fetching (from in_backend it may move to ending, over)"
    )
    places.move("r1", Place.ENDING)
    places.move("r1", Place.OVER)
    with pytest.raises(IllegalMove, match="nowhere"):
        places.claiming(["r1"])


def test_only_the_last_ended_runs_are_remembered_as_over() -> None:
    places = Whereabouts(remember=2)
    for run_id in ("r1", "r2", "r3"):
        places.move(run_id, Place.HANDING_OVER)
        places.move(run_id, Place.OVER)
    assert [places.where(run_id) for run_id in ("r1", "r2", "r3")] == [P.ELSEWHERE, P.OVER, P.OVER]


class WhereaboutsMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.places = Whereabouts()
        self.model: dict[str, Place] = dict.fromkeys(RUNS, P.ELSEWHERE)
        self.stops: dict[str, Status] = {}
        self.in_backend_this_stay: dict[str, int] = dict.fromkeys(RUNS, 0)
        self.ended: set[str] = set()

    # --- the model -----------------------------------------------------------------------------

    def expect(self, run_id: str, to: Place, act: object) -> bool:
        """Apply ``act`` (a call moving ``run_id`` to ``to``); checks it is legal exactly when the story
        says, and that an illegal one changed nothing. Returns whether it moved."""
        at = self.model[run_id]
        before = (self.places.where(run_id), self.places.held(), self.places.stop_asked(run_id))
        if (at, to) in STORY:
            assert callable(act)
            act()
            self.model[run_id] = to
            if to is P.IN_BACKEND:
                self.in_backend_this_stay[run_id] += 1
            if to not in ON_THE_WAY:
                self.stops.pop(run_id, None)
            if to in (P.ELSEWHERE, P.OVER):
                self.in_backend_this_stay[run_id] = 0
            if to is P.OVER:
                self.ended.add(run_id)
            return True
        with pytest.raises(IllegalMove):
            assert callable(act)
            act()
        assert (self.places.where(run_id), self.places.held(), self.places.stop_asked(run_id)) == before
        return False

    # --- events ----------------------------------------------------------------------------------

    @rule(run_id=st.sampled_from(RUNS))
    def dispatcher_claims(self, run_id: str) -> None:
        self.expect(run_id, P.CLAIMING, lambda: self.places.claiming([run_id]))

    @rule(run_ids=st.lists(st.sampled_from(RUNS), min_size=1, max_size=3, unique=True))
    def dispatcher_claims_a_batch(self, run_ids: list[str]) -> None:
        """All or none: a batch with one run held already raises and claims none."""
        if all(self.model[run_id] is P.ELSEWHERE for run_id in run_ids):
            self.places.claiming(run_ids)
            self.model.update(dict.fromkeys(run_ids, P.CLAIMING))
            return
        held = self.places.held()
        with pytest.raises(IllegalMove):
            self.places.claiming(run_ids)
        assert self.places.held() == held

    @rule(run_id=st.sampled_from(RUNS))
    def recorder_holds(self, run_id: str) -> None:
        self.expect(run_id, P.HANDING_OVER, lambda: self.places.move(run_id, P.HANDING_OVER))

    @rule(run_id=st.sampled_from(RUNS))
    def claim_lost_or_server_stops_or_end_not_written(self, run_id: str) -> None:
        self.expect(run_id, P.ELSEWHERE, lambda: self.places.move(run_id, P.ELSEWHERE))

    @rule(run_id=st.sampled_from(RUNS))
    def fetch_starts(self, run_id: str) -> None:
        self.expect(run_id, P.FETCHING, lambda: self.places.move(run_id, P.FETCHING))

    @rule(run_id=st.sampled_from(RUNS))
    def backend_has_it(self, run_id: str) -> None:
        """``submitted``: from HANDING_OVER it moves; a run ending or over stays; anything else is illegal."""
        at = self.model[run_id]
        if at in (P.ENDING, P.OVER):
            assert self.places.submitted(run_id) is None
            assert self.places.where(run_id) is at
            return
        stop = self.stops.get(run_id)
        got: list[Status | None] = []
        if self.expect(run_id, P.IN_BACKEND, lambda: got.append(self.places.submitted(run_id))):
            assert got == [stop]  # the first stop asked on the way is the one the hand-over sends

    @rule(run_id=st.sampled_from(RUNS))
    def end_begins(self, run_id: str) -> None:
        self.expect(run_id, P.ENDING, lambda: self.places.move(run_id, P.ENDING))

    @rule(run_id=st.sampled_from(RUNS))
    def over(self, run_id: str) -> None:
        self.expect(run_id, P.OVER, lambda: self.places.move(run_id, P.OVER))

    @rule(run_id=st.sampled_from(RUNS), end=st.sampled_from([Status.CANCELED, Status.ABORTED]))
    def stop_asked(self, run_id: str, end: Status) -> None:
        at = self.places.ask_stop(run_id, end)
        assert at is self.model[run_id]
        if at in ON_THE_WAY:
            self.stops.setdefault(run_id, end)

    @rule(run_id=st.sampled_from(RUNS), to=st.sampled_from(list(Place)))
    def any_move(self, run_id: str, to: Place) -> None:
        self.expect(run_id, to, lambda: self.places.move(run_id, to))

    # --- invariants --------------------------------------------------------------------------------

    @invariant()
    def each_run_is_in_exactly_one_place(self) -> None:
        for run_id in RUNS:
            assert self.places.where(run_id) is self.model[run_id]
            assert (run_id in self.places) == (self.model[run_id] in HELD)

    @invariant()
    def the_held_runs_are_those_in_a_held_place(self) -> None:
        assert self.places.held() == {run_id for run_id, at in self.model.items() if at in HELD}
        assert len(self.places) == len(self.places.held())

    @invariant()
    def over_is_terminal(self) -> None:
        for run_id in self.ended:  # once over, over for good: every later event on it was refused
            assert self.places.where(run_id) is P.OVER and run_id not in self.places

    @invariant()
    def in_the_backend_at_most_once_a_stay(self) -> None:
        assert all(count <= 1 for count in self.in_backend_this_stay.values())

    @invariant()
    def stops_are_kept_only_on_the_way(self) -> None:
        for run_id in RUNS:
            expected = self.stops.get(run_id) if self.model[run_id] in ON_THE_WAY else None
            assert self.places.stop_asked(run_id) == expected


WhereaboutsMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
test_whereabouts_machine = WhereaboutsMachine.TestCase

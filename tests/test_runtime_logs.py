"""runtime/logs.py: coglet's routine per-prediction lines are skipped unparsed; every other line is kept.

coglet 0.23.1 writes two INFO lines per prediction (target ``coglet::prediction``, no ``source``); the
instance's log tail neither shows nor waits for them, so they are dropped before ``json.loads`` (issue 21).
What must not be dropped: anything the model printed (target ``coglet::prediction`` with a ``source`` while it
predicts, ``coglet::user`` from raw fd writes), whatever its text; coglet's warnings and errors about a
prediction; start-up milestones.
"""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cogport.runtime.logs import LogTail


def coglet_line(message: str, *, level: str = "INFO", target: str = "coglet::prediction", **fields: str) -> str:
    record = {
        "timestamp": "2026-12-03T08:58:26.434000Z",
        "level": level,
        "fields": {"message": message, **fields},
        "target": target,
    }
    return json.dumps(record, separators=(",", ":"))


def test_routine_prediction_lines_are_not_kept() -> None:
    tail = LogTail("instance")
    tail.add(coglet_line("Starting prediction", prediction_id="p1"))
    tail.add(coglet_line("Prediction worker completed", prediction_id="p1", predict_time="0.0008"))
    assert list(tail._lines) == []


@given(text=st.text())
def test_fd_level_output_is_kept(text: str) -> None:
    tail = LogTail("instance")
    tail.setup_done = True
    heard: list[str] = []
    tail.listen("p1", heard.append)
    tail.add(coglet_line(text, target="coglet::user"))
    assert heard == [text + "\n"]


@pytest.mark.parametrize("level", ["WARN", "ERROR"])
def test_warnings_and_errors_about_a_prediction_are_kept(level: str) -> None:
    tail = LogTail("instance")
    tail.add(coglet_line("Prediction failed: worker died", level=level))
    assert tail.tail() == "[coglet::prediction] Prediction failed: worker died"


def test_routine_lines_are_kept_when_debugging(caplog: pytest.LogCaptureFixture) -> None:
    tail = LogTail("instance")
    with caplog.at_level(logging.DEBUG, logger="cogport.runtime.logs"):
        tail.add(coglet_line("Starting prediction"))
    assert "[instance] [coglet::prediction] Starting prediction" in caplog.text
    assert len(tail._lines) == 1


@given(text=st.text(), source=st.sampled_from(["Stdout", "Stderr"]))
def test_whatever_the_model_prints_is_kept_and_relayed(text: str, source: str) -> None:
    """A model's line is kept however its text tries to look like a routine line."""
    lookalikes = [
        text,
        text + '","level":"INFO"},"target":"coglet::prediction"}',
        '"target":"coglet::prediction"}',
        "Starting prediction",
    ]
    for message in lookalikes:
        tail = LogTail("instance")
        tail.setup_done = True
        heard: list[str] = []
        tail.listen("p1", heard.append)
        tail.add(coglet_line(message, source=source, prediction_id="p1"))
        assert heard == [message + "\n"]
        assert tail.tail(1) == message


def test_milestones_still_wake_the_waiter() -> None:
    tail = LogTail("instance")
    tail.add(coglet_line("Server ready", target="coglet"))
    assert tail.milestone.is_set()

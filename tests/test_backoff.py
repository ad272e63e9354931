"""The doubling backoff (``core/backoff.py``) and the schedules built on it, on a clock the test sets.

The helper only computes delays (each user sleeps, or waits on something else, as it must), so no test here
sleeps: the schedules that take a time (a version's restarts, a webhook's retries) are given ``now``.
"""

from __future__ import annotations

import math
from itertools import islice, pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cogport.core.backoff import doubling, nth
from cogport.errors import SetupFailed
from cogport.runtime.coglet_api import CANCEL_RETRY_FIRST, CANCEL_RETRY_MAX, CONFLICT_RETRY_FIRST, CONFLICT_RETRY_MAX
from cogport.runtime.group import VersionGroup
from cogport.settings import RuntimeSettings, WebhookSettings
from cogport.webhooks.sender import retry_delay
from tests.support.runtime import spec


def test_doubling_starts_at_first_and_stops_growing_at_the_cap() -> None:
    assert list(islice(doubling(0.25, 5.0), 8)) == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_the_runtime_schedules_are_those_of_before() -> None:
    # 0.1 s doubling to 1 s (cancel); 1 ms doubling to 50 ms (409s)
    assert list(islice(doubling(CANCEL_RETRY_FIRST, CANCEL_RETRY_MAX), 6)) == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert list(islice(doubling(CONFLICT_RETRY_FIRST, CONFLICT_RETRY_MAX), 8)) == [
        0.001,
        0.002,
        0.004,
        0.008,
        0.016,
        0.032,
        0.05,
        0.05,
    ]


def test_a_first_delay_over_the_cap_is_the_cap() -> None:
    assert list(islice(doubling(10.0, 3.0), 3)) == [3.0, 3.0, 3.0]
    assert nth(10.0, 3.0, 1) == 3.0


def test_without_a_cap_it_doubles_on() -> None:
    assert [nth(0.25, math.inf, n) for n in range(1, 6)] == [0.25, 0.5, 1.0, 2.0, 4.0]


def test_nth_counts_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        nth(1.0, 2.0, 0)


def test_an_attempt_far_past_the_cap_is_the_cap() -> None:
    assert nth(1.0, 30.0, 5000) == 30.0  # 2.0 ** 4999 overflows a float
    assert nth(1.0, math.inf, 5000) == math.inf


@given(
    first=st.floats(min_value=1e-6, max_value=1e3),
    cap=st.floats(min_value=1e-6, max_value=1e6),
    count=st.integers(min_value=1, max_value=80),
)
def test_nth_is_the_nth_delay_of_doubling(first: float, cap: float, count: int) -> None:
    delays = list(islice(doubling(first, cap), count))
    assert delays == [nth(first, cap, n) for n in range(1, count + 1)]
    assert all(a <= b <= cap for a, b in pairwise(delays))


def test_a_versions_restarts_back_off_on_the_clock_it_is_given() -> None:
    group = VersionGroup(spec("noop"))
    settings = RuntimeSettings(start_backoff_initial=1.0, start_backoff_max=30.0, setup_attempts=10)
    now = 1000.0
    waits = []
    for _ in range(7):
        refused = group.start_failed(SetupFailed("weights missing"), settings, now)
        assert not refused
        waits.append(group.retry_at - now)
        assert group.in_backoff(now) and not group.in_backoff(group.retry_at)
        now = group.retry_at
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_a_webhook_is_retried_doubling_until_retry_for_runs_out() -> None:
    settings = WebhookSettings(retry_initial=1.0, retry_max_delay=8.0, retry_for=40.0)
    age, attempt, waits = 0.0, 1, []
    while (delay := retry_delay(settings, attempt, age)) is not None:
        waits.append(delay)
        age += delay
        attempt += 1
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]  # 39 s; the next would end after 40

"""A flood of refusals is summarised in the log, never lost from the counts."""

from __future__ import annotations

import threading

import pytest

from shared.logthrottle import LogThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_first_of_each_kind_at_once_then_one_per_interval_with_the_count_held_back() -> None:
    clock = Clock()
    t = LogThrottle(10.0, clock)
    assert t.admit("decode") == ""
    assert t.admit("version") == ""  # another kind is not held back by the first
    assert [t.admit("decode") for _ in range(5)] == [None] * 5
    clock.now += 9.9
    assert t.admit("decode") is None
    clock.now += 0.2
    assert t.admit("decode") == " (6 more like it in the last 10 s, not logged)"
    clock.now += 10
    assert t.admit("decode") == ""  # nothing was held back since


def test_interval_zero_logs_everything_and_a_negative_one_is_refused() -> None:
    t = LogThrottle(0.0, Clock())
    assert [t.admit("k") for _ in range(3)] == ["", "", ""]
    with pytest.raises(ValueError, match="interval_s"):
        LogThrottle(-1)


def test_counts_hold_across_threads() -> None:
    clock = Clock()
    t = LogThrottle(10.0, clock)
    admitted = []

    def flood() -> None:
        admitted.extend(x for x in (t.admit("k") for _ in range(1000)) if x is not None)

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert admitted == [""]
    clock.now += 10
    assert t.admit("k") == " (3999 more like it in the last 10 s, not logged)"

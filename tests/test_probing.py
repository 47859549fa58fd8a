"""device/probing.py: which probe the node sends next (pure: a clock in the test's hands)."""

from __future__ import annotations

import pytest

from device.probing import ProbePlan

ORDER = [2, 0, 1]  # arms, smallest probe first


def _plan(**options) -> ProbePlan:
    options.setdefault("sweep_first", False)
    return ProbePlan(lambda: ORDER, interval_s=5.0, patience_s=2.0, now=100.0, **options)


def test_one_probe_per_interval_cycling_over_the_arms() -> None:
    plan = _plan()
    assert plan.next(104.9, pending=0, outage=False) is None
    sent = [plan.next(100.0 + 5 * k, pending=0, outage=False) for k in range(1, 5)]
    assert sent == [0, 1, 2, 0]
    assert plan.next(121.0, pending=0, outage=False) is None  # the next is due at 125


def test_a_sweep_sends_every_arm_smallest_first_one_at_a_time() -> None:
    plan = _plan(sweep_first=True)
    assert plan.sweeping
    assert plan.next(100.0, pending=0, outage=False) == 2
    assert plan.next(100.1, pending=1, outage=False) is None  # its probe is still out
    assert plan.next(100.2, pending=0, outage=False) == 0  # back: the next one
    assert plan.next(102.3, pending=1, outage=False) == 1  # lost after 2 s: go on anyway
    assert plan.sweeping  # its last probe is out
    assert plan.next(102.4, pending=0, outage=False) is None
    assert not plan.sweeping
    assert plan.next(107.0, pending=0, outage=False) is None  # the cycle resumes a period on
    assert plan.next(107.4, pending=0, outage=False) == 0


def test_the_end_of_an_outage_measures_every_arm_again() -> None:
    """The link that came back may be another one (LTE before the outage, Wi-Fi after): each
    arm's estimate is stale, and the cycle would take a period per arm to renew them."""
    plan = _plan()
    assert plan.next(101.0, pending=0, outage=True) is None  # probes go by the cycle meanwhile
    assert plan.next(101.5, pending=3, outage=False) == 2  # over: a sweep, held ones aside
    assert plan.sweeping


def test_nonsense_intervals_are_refused() -> None:
    with pytest.raises(ValueError):
        ProbePlan(lambda: ORDER, interval_s=0.0, patience_s=1.0, now=0.0)


def test_a_round_trip_held_up_by_an_outage_measures_every_arm_again() -> None:
    """A node that answered on its own sent no offload to time out, so it never priced an
    outage; its probes, held and delivered when the link came back, say it ended."""
    plan = _plan()
    assert plan.next(101.0, pending=2, outage=False, held=0) is None
    assert plan.next(101.5, pending=0, outage=False, held=2) == 2  # two came back late
    assert plan.next(101.6, pending=0, outage=False, held=2) == 0  # the sweep goes on
    assert plan.next(101.7, pending=0, outage=False, held=2) == 1
    assert plan.next(101.8, pending=0, outage=False, held=2) is None  # and ends


def test_start_up_sweeps_before_any_probe_of_the_cycle() -> None:
    """Timing the model on a slow node takes longer than an interval: the cycle's first probe
    is due by the time the plan is first asked, and sent then it would queue ahead of the
    sweep's first (a 75 kB activation ahead of the frame on LTE: 310 ms instead of 96)."""
    plan = _plan(sweep_first=True)
    assert plan.sweeping  # before it was asked: the node waits for it
    assert plan.next(130.0, pending=0, outage=False) == 2  # the sweep's smallest, not arm 0
    assert plan.next(130.1, pending=0, outage=False) == 0
    assert plan.next(130.2, pending=0, outage=False) == 1
    assert plan.next(130.3, pending=0, outage=False) is None
    assert not plan.sweeping


def test_the_favoured_arm_gets_every_other_turn_of_the_cycle() -> None:
    """The frame's round trip prices an unsure exit's offload at every split: a node answering
    on its own re-times it every two intervals, not once per cycle over all the arms."""
    favoured: list[int | None] = [1]
    plan = _plan(favoured=lambda: favoured[0])
    sent = [plan.next(100.0 + 5 * k, pending=0, outage=False) for k in range(1, 7)]
    assert sent == [1, 0, 1, 1, 1, 2]  # favoured, then the cycle's arms in turn
    favoured[0] = None  # the node sends frames now: each one times the frame's round trip
    sent = [plan.next(130.0 + 5 * k, pending=0, outage=False) for k in range(1, 4)]
    assert sent == [0, 1, 2]


def test_a_quiet_probe_holds_edge_runs_until_it_is_back_or_lost() -> None:
    """A busy node times its frame probe late (its own threads wait for the CPU): while the
    probe is out the next edge run waits, until the probe is back, or its deadline if lost."""
    import threading
    import time

    from device.probing import QuietProbe

    quiet = QuietProbe(time.monotonic)
    started = time.monotonic()
    assert quiet.wait() == 0.0  # nothing out: no wait
    assert time.monotonic() - started < 0.05
    quiet.begin(7, time.monotonic() + 5.0)
    threading.Timer(0.2, quiet.end, args=(6,)).start()  # another probe's return: still held
    threading.Timer(0.4, quiet.end, args=(7,)).start()
    started = time.monotonic()
    held = quiet.wait()  # what the frame's wait leaves out: probing's cost, not its arm's
    assert 0.35 < held <= time.monotonic() - started < 2.0
    quiet.begin(8, time.monotonic() + 0.3)  # lost: edge runs go on at its deadline
    started = time.monotonic()
    quiet.wait()
    assert 0.25 < time.monotonic() - started < 2.0
    quiet.wait()  # past the deadline: no more waiting
    assert time.monotonic() - started < 2.0

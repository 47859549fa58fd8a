"""The node's live cost tracker: paper units, smoothing, and a slow link made visible."""

from __future__ import annotations

import math

import pytest

from device.costs import LiveCosts

BLOCKS = (3, 6, 19)
EDGE = {3: 0.001, 6: 0.002, 19: 0.010}
BYTES = {3: 10_000, 6: 5_000, 19: 1_000}


def costs(**over) -> LiveCosts:
    return LiveCosts(BLOCKS, EDGE, BYTES, link_mbit_per_s=10, rtt_ms=20, **over)


def test_units_are_the_papers_whole_network_on_the_device_costs_1_9() -> None:
    model = costs().cost_model()
    assert model.edge == pytest.approx((0.19, 0.38, 1.9))
    # Prior offload: 10 kB over 10 Mbit/s (8 ms) + 20 ms round trip = 28 ms = 5.32 units.
    assert model.offload[0] == pytest.approx(0.028 / 0.010 * 1.9)


def test_measured_round_trips_replace_the_prior_and_are_smoothed() -> None:
    c = costs(smoothing=0.5)
    c.observe_offload(0, 0.002)
    assert c.offload_seconds(0) == pytest.approx(0.002)
    assert c.offload_seconds(1) == pytest.approx(0.002)  # unmeasured arm: the link's figure
    c.observe_offload(0, 0.004)
    assert c.offload_seconds(0) == pytest.approx(0.003)


def test_a_slow_link_makes_offloading_dearer_than_the_whole_network() -> None:
    c = costs()
    for _ in range(5):
        c.observe_offload(0, 0.001)
    cheap = c.cost_model()
    assert cheap.edge[0] + cheap.offload[0] < cheap.edge[-1]
    for _ in range(10):
        c.observe_offload(0, 0.200)
    slow = c.cost_model()
    assert slow.edge[0] + slow.offload[0] > 10 * slow.edge[-1]


def test_a_busier_device_makes_offloads_relatively_cheaper() -> None:
    c = costs(smoothing=1.0)
    c.observe_offload(0, 0.005)
    before = c.cost_model()
    c.observe_edge(0, 0.002)  # twice as slow as at start-up
    after = c.cost_model()
    assert c.edge_seconds(2) == pytest.approx(0.020)
    assert after.edge == before.edge and after.edge[-1] == pytest.approx(1.9)
    assert after.offload[0] == pytest.approx(before.offload[0] / 2)


def test_bad_arguments_fail_early() -> None:
    with pytest.raises(ValueError, match="smoothing"):
        costs(smoothing=0)
    with pytest.raises(ValueError, match="positive"):
        LiveCosts(BLOCKS, {**EDGE, 3: 0.0}, BYTES, link_mbit_per_s=10, rtt_ms=20)


def test_an_outage_prices_every_offload_at_the_wait_until_an_answer_comes() -> None:
    c = costs(late_s=2.0)
    for _ in range(3):
        c.observe_offload(0, 0.004)
    before = c.cost_model()
    assert before.edge[0] + before.offload[0] < before.edge[-1]  # offloading pays
    c.observe_timeout(4.0)  # no reply in time: the node would wait 4 s before falling back
    # the wait, and the whole network for an answer as good: nothing offloads meanwhile
    assert c.outage and all(c.offload_seconds(i) == pytest.approx(4.01) for i in range(3))
    down = c.cost_model()
    assert min(e + o for e, o in zip(down.edge[:-1], down.offload[:-1], strict=True)) > (
        100 * down.edge[-1]
    )
    c.observe_answer()  # a late reply: the link delivers again
    assert not c.outage and c.cost_model() == before


def test_a_round_trip_held_up_by_an_outage_ends_it_but_is_not_a_measurement() -> None:
    """A probe sent during an outage arrives when it ends, 30 s later: blended in, it would
    price offloading out for many probes after the link recovered."""
    c = costs(late_s=2.0, smoothing=0.5)
    c.observe_offload(0, 0.004)
    c.observe_timeout(4.0)
    c.observe_offload(0, 30.0)
    assert not c.outage and c.offload_seconds(0) == pytest.approx(0.004)
    assert c.held_round_trips == 1  # the node measures every arm again (device/probing.py)
    c.observe_offload(0, 0.006)  # on time: a measurement as before
    assert c.held_round_trips == 1
    assert c.offload_seconds(0) == pytest.approx(0.005)
    slow = costs(smoothing=0.5)  # without late_s every round trip counts, as before
    slow.observe_offload(0, 0.004)
    slow.observe_offload(0, 30.0)
    assert slow.offload_seconds(0) == pytest.approx(15.002)
    with pytest.raises(ValueError, match="late_s"):
        costs(late_s=0)


def test_an_estimate_a_probe_made_long_ago_gives_way_to_the_next_one() -> None:
    """The day's case: after LTE the node answers on its own and only probes see the link,
    each split's once a probe cycle. An estimate half a minute old says little of the link
    now, so the next probe mostly replaces it; one measured a frame ago is smoothed."""
    c = costs(stale_s=10.0)
    c.observe_offload(0, 0.150, now=0.0)  # LTE
    c.observe_offload(0, 0.015, now=35.0)  # Wi-Fi, one probe cycle later
    fresh = c.offload_seconds(0)
    assert fresh < 0.025
    c.observe_offload(0, 0.150, now=35.25)  # a frame later: smoothed as before
    assert c.offload_seconds(0) == pytest.approx(fresh + 0.2 * (0.150 - fresh))
    timeless = costs()  # no clock given: smoothed whatever the age, as before
    timeless.observe_offload(0, 0.150)
    timeless.observe_offload(0, 0.015)
    assert timeless.offload_seconds(0) == pytest.approx(0.150 - 0.2 * 0.135)
    with pytest.raises(ValueError, match="stale_s"):
        costs(stale_s=0)


def test_an_arm_whose_frames_wait_longer_is_priced_at_their_wait() -> None:
    """Zero 2 W over LTE (docs/testbed.md): the whole network and the frame's round trip tie
    in their own times, but the whole network keeps the node's one core busy and its results
    come 60 ms later. The wait (read-to-result less the parts timed) is the arm's own."""
    c = costs(smoothing=1.0)
    c.observe_offload(0, 0.009)  # split 3 with its offload: 1 + 9 ms, the whole network 10
    even = c.cost_model()
    assert even.edge[0] + even.offload[0] == pytest.approx(even.edge[-1])
    c.observe_result(2, latency_s=0.016, timed_s=0.010)  # 6 ms behind its own threads
    c.observe_result(0, latency_s=0.012, timed_s=0.010)  # 2 ms
    priced = c.cost_model()
    assert priced.edge[-1] - priced.edge[0] - priced.offload[0] == pytest.approx(4 * 0.19)
    assert c.wait_seconds(1) == pytest.approx(0.002)  # not played: the least any arm waits
    c.observe_result(0, latency_s=0.005, timed_s=0.010)  # less than timed: no wait, not less
    assert c.wait_seconds(0) == 0.0 and c.wait_seconds(1) == 0.0
    assert costs().wait_seconds(0) == 0.0  # nothing measured: the timed parts alone


def test_an_arm_not_played_for_a_while_is_tried_again() -> None:
    """One busy spell (another process on the board) must not price an arm out for good:
    what it waited more than the arm in play fades, a minute at a time."""
    c = costs(smoothing=1.0, wait_fade_s=60.0)
    c.observe_result(2, latency_s=0.110, timed_s=0.010, now=0.0)  # 100 ms behind the spell
    c.observe_result(0, latency_s=0.015, timed_s=0.010, now=1.0)
    assert c.wait_seconds(2) == pytest.approx(0.005 + 0.095 * math.exp(-1 / 60))
    for t in range(2, 121):
        c.observe_result(0, latency_s=0.015, timed_s=0.010, now=float(t))
    assert c.wait_seconds(2) == pytest.approx(0.005 + 0.095 * math.exp(-2), rel=1e-6)
    c.observe_result(2, latency_s=0.030, timed_s=0.010, now=121.0)  # measured again: its own
    assert c.wait_seconds(2) == pytest.approx(0.020)
    assert c.wait_seconds(0) == pytest.approx(0.005)  # less than the arm in play: kept
    with pytest.raises(ValueError, match="wait_fade_s"):
        costs(wait_fade_s=0)

"""The per-arm statistics on their own (shared/policy/stats.py): what a sample feeds, and
discounting that renormalises the sums a policy tracks with them."""

from __future__ import annotations

import pytest

from shared.cost import RewardModel, paper_cost
from shared.policy.stats import KEYS, ArmStats

RM = RewardModel(paper_cost((3, 9, 19)), alpha=0.5)


def test_a_sample_feeds_the_exits_it_computed_and_the_censored_part_it_revealed() -> None:
    stats = ArmStats(3)
    stats.learn(1, (0.4, 0.3), 0.9, independent=False, alpha=0.5)  # arm 1 offloaded
    state = stats.to_state()
    assert state["n"] == [1.0, 1.0, 0.0] and state["e"] == [0.0, 0.0, 0.0]
    assert state["m"] == [0.0, 1.0, 0.0]  # C_L was revealed because exit 1 was unsure too
    stats.learn(2, (0.4, 0.8, 0.7), 0.7, independent=True, alpha=0.5)  # the whole network
    state = stats.to_state()
    assert state["m"] == [1.0, 1.0, 1.0] and state["e"] == [0.0, 1.0, 0.0]
    assert stats.estimates(RM)[2] == pytest.approx(0.7 - 1.9)


def test_discounting_renormalises_the_tracked_sums_with_the_statistics() -> None:
    stats = ArmStats(2)
    mine = [0.0, 0.0]
    stats.track(mine)
    for _ in range(400):  # 2**400 > 1e100: renormalised on the way
        stats.discount(0.5)
        stats.learn(1, (0.9, 0.2), 0.6, independent=True, alpha=0.5)
        mine[0] += stats.w
    assert stats.w < 1e100
    assert mine[0] / stats.w == pytest.approx(stats.to_state()["n"][0])
    assert stats.to_state()["n"][0] == pytest.approx(2.0)  # 1 + 1/2 + 1/4 + ...
    stats.reset()
    assert mine == [0.0, 0.0] and all(v == [0.0, 0.0] for v in stats.to_state().values())


def test_a_saved_state_loads_back() -> None:
    stats = ArmStats(3)
    stats.learn(2, (0.4, 0.8, 0.7), 0.7, independent=True, alpha=0.5)
    again = ArmStats(3)
    again.load(stats.to_state())
    assert again.to_state() == stats.to_state() and set(stats.to_state()) == set(KEYS)
    assert again.estimates(RM) == stats.estimates(RM)

"""Properties of the reward rule and the bandit's bookkeeping over arbitrary inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.bandit import BanditError, DiscountedUCB, ISplitEE, policy_from_state
from shared.cost import RewardModel, paper_cost

BLOCKS = (3, 6, 9, 12, 15, 18, 19)
RM = RewardModel(paper_cost(BLOCKS))
conf_rows = st.lists(st.floats(0.0, 1.0), min_size=7, max_size=7)


@given(conf=conf_rows, arm=st.integers(0, 6), cloud_answered=st.booleans())
def test_revealed_rewards_are_the_full_information_rewards(conf, arm, cloud_answered) -> None:
    """Whatever a sample reveals is exactly its full-information reward, never a guess."""
    full = RM.reward_matrix(np.array([conf]))[0]
    offloaded = RM.outcome(arm, conf[arm]).offloaded
    final = conf[-1] if (arm == 6 or (offloaded and cloud_answered)) else None
    got = RM.revealed(arm, conf[: arm + 1], final)
    assert set(got) <= set(range(arm + 1))
    for j, r in got.items():
        assert r == full[j]
    if final is not None:
        assert set(got) == set(range(arm + 1))  # with C_L known, every computed exit counts
    if not offloaded or final is not None:
        assert arm in got  # the chosen arm is learnt unless its offload is still unanswered


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(st.tuples(st.sampled_from(["update", "cancel", "hold"]), conf_rows), max_size=60),
    discounted=st.booleans(),
)
def test_bookkeeping_holds_for_any_sequence(ops, discounted) -> None:
    p = DiscountedUCB(7) if discounted else ISplitEE(7)
    held = []
    learnt = 0
    for op, conf in ops:
        d = p.decide()
        assert 0 <= d.arm < 7
        if op == "hold":
            held.append(d)
        elif op == "cancel":
            p.cancel(d)
        else:
            rewards = RM.revealed(d.arm, conf[: d.arm + 1], conf[-1])
            p.update(d, rewards)
            learnt += len(rewards)
    assert p.pending == len(held)
    if not discounted:
        assert sum(p.counts) == learnt
    q = policy_from_state(json.loads(json.dumps(p.to_state())))
    for d in held:  # late replies are accepted once, after a restart too
        q.update(d, {})
        with pytest.raises(BanditError, match="already settled"):
            q.update(d, {})
    assert q.pending == 0

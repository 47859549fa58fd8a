from __future__ import annotations

import json

import numpy as np
import pytest

from shared.bandit import (
    BanditError,
    Decision,
    DiscountedUCB,
    FixedSplit,
    ISplitEE,
    RandomSplit,
    policy_from_state,
)
from shared.cost import RewardModel, paper_cost
from shared.lab.simulate import Segment, Stream, run_policy, settle_times

BLOCKS = (3, 6, 9, 12, 15, 18, 19)


def synthetic_stream(best: int, n: int, seed: int = 0) -> Stream:
    """Confidences where exit ``best`` is confident and cheap enough to be the best split.

    Shallower exits are unsure, so they offload, and the final layer is unsure too, so an
    offload earns little; exits from ``best`` on are confident, and each deeper one costs
    more blocks: the reward peaks at ``best``, 0.3 above the runner-up.
    """
    rng = np.random.default_rng(seed)
    k = len(BLOCKS)
    conf = np.empty((n, k))
    for j in range(k):
        if j < best:
            conf[:, j] = rng.uniform(0.2, 0.45, n)
        else:
            conf[:, j] = rng.uniform(0.9, 1.0, n)
    conf[:, -1] = rng.uniform(0.2, 0.3, n)
    correct = np.ones((n, k), bool)
    return Stream(conf, correct, (Segment("synthetic", 0, n),))


def _best_arm(stream: Stream, rm: RewardModel) -> int:
    return int(np.argmax(rm.reward_matrix(stream.confidences).mean(axis=0)))


@pytest.mark.parametrize("best", [0, 1, 2, 3])
@pytest.mark.parametrize(
    ("policy_cls", "share"),
    # the discounted variant forgets on purpose (about 200 rounds), so it keeps re-trying
    [(ISplitEE, 0.9), (DiscountedUCB, 0.8)],
)
def test_finds_the_known_best_arm(best: int, policy_cls, share: float) -> None:
    rm = RewardModel(paper_cost(BLOCKS))
    stream = synthetic_stream(best, 3000, seed=best)
    assert _best_arm(stream, rm) == best  # the table is what we think it is
    trace = run_policy(policy_cls(len(BLOCKS)), stream, rm)
    late = trace.arms[len(trace.arms) // 2 :]
    assert np.mean(late == best) >= share


def test_regret_grows_sublinearly() -> None:
    rm = RewardModel(paper_cost(BLOCKS))
    stream = synthetic_stream(2, 8000, seed=5)
    full = rm.reward_matrix(stream.confidences)
    trace = run_policy(ISplitEE(len(BLOCKS)), stream, rm)
    regret = np.cumsum(full[:, 2]) - np.cumsum(trace.rewards)
    first, second = regret[3999], regret[-1] - regret[3999]
    assert first > 0 and second < 0.5 * first


# -- side observations, checked by hand -------------------------------------------------------
# Three arms at blocks 3, 9, 19 with the paper's constants: edge cost 0.3, 0.9, 1.9; offload 0.5.
HAND = RewardModel(paper_cost((3, 9, 19)))


def test_early_exit_reveals_only_what_was_computed() -> None:
    # C = [0.4, 0.8], split at arm 1: exits there. Arm 0 would have offloaded and needs C_L,
    # which nobody computed: not revealed.
    assert HAND.revealed(1, [0.4, 0.8], None) == pytest.approx({1: 0.8 - 0.9})


def test_offload_reveals_shallower_arms_once_the_cloud_answers() -> None:
    # C = [0.6, 0.3], split at arm 1: offloads. Arm 0 exits (0.6 - 0.3) whatever the cloud says.
    assert HAND.revealed(1, [0.6, 0.3], None) == pytest.approx({0: 0.3})
    got = HAND.revealed(1, [0.6, 0.3], 0.9)
    assert got == pytest.approx({0: 0.6 - 0.3, 1: 0.9 - (0.9 + 0.5)})


def test_last_arm_reveals_every_arm() -> None:
    got = HAND.revealed(2, [0.4, 0.8, 0.9], None)
    assert got == pytest.approx({0: 0.9 - (0.3 + 0.5), 1: 0.8 - 0.9, 2: 0.9 - 1.9})


def test_update_touches_exactly_the_revealed_arms() -> None:
    p = ISplitEE(3)
    for _ in range(3):  # initial plays: arms 0, 1, 2 in order
        d = p.decide()
        p.update(d, {d.arm: 0.0})
    assert p.counts == [1, 1, 1]
    d = p.decide()
    p.update(Decision(d.id, d.arm), HAND.revealed(d.arm, [0.6, 0.3, 0.9][: d.arm + 1], 0.9))
    expect = {0: [2, 1, 1], 1: [2, 2, 1], 2: [2, 2, 2]}[d.arm]
    assert p.counts == expect
    assert p.values[0] == pytest.approx((0.0 + 0.3) / 2)


def test_reward_matrix_matches_revealed_rewards() -> None:
    rng = np.random.default_rng(1)
    conf = rng.uniform(0, 1, (200, 3))
    full = HAND.reward_matrix(conf)
    for row, c in zip(full, conf, strict=True):
        assert HAND.revealed(2, list(c), None) == pytest.approx(dict(enumerate(row)))


# -- misuse --------------------------------------------------------------------------------------
def test_update_twice_is_an_error() -> None:
    p = ISplitEE(3)
    d = p.decide()
    p.update(d, {0: 0.1})
    with pytest.raises(BanditError, match=r"decision 0 was already settled"):
        p.update(d, {0: 0.1})
    with pytest.raises(BanditError, match=r"decision 0 was already settled"):
        p.cancel(d)


def test_update_for_a_decision_never_made() -> None:
    p = ISplitEE(3)
    with pytest.raises(BanditError, match=r"decision 7 was never made"):
        p.update(7, {0: 0.0})
    with pytest.raises(BanditError, match=r"decision 0 was never made"):
        p.update(Decision(0, 0), {0: 0.0})


def test_reward_for_an_arm_the_decision_could_not_reveal() -> None:
    p = ISplitEE(3)
    d = p.decide()  # arm 0 first
    with pytest.raises(BanditError, match=r"cannot reveal the reward of arm 2"):
        p.update(d, {2: 0.5})
    with pytest.raises(BanditError, match=r"finite number, got nan"):
        p.update(d, {0: float("nan")})
    with pytest.raises(BanditError, match=r"chose arm 0, not 1"):
        p.update(Decision(d.id, 1), {0: 0.5})
    assert p.counts == [0, 0, 0] and p.pending == 1  # nothing learnt, still open
    p.update(d, {0: 0.5})
    assert p.counts == [1, 0, 0] and p.pending == 0


def test_delayed_updates_and_cancel() -> None:
    p = ISplitEE(3)
    ds = [p.decide() for _ in range(3)]
    assert p.pending == 3 and [d.arm for d in ds] == [0, 0, 0]  # nothing learnt yet
    p.update(ds[2], {0: 1.0})
    p.cancel(ds[0])
    assert p.pending == 1 and p.counts == [1, 0, 0]


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: ISplitEE(0), "n_arms should be at least 1, got 0"),
        (lambda: ISplitEE(3, c=-1), "exploration c should be >= 0, got -1"),
        (lambda: DiscountedUCB(3, discount=1.0), r"discount should be in \(0, 1\), got 1.0"),
        (lambda: FixedSplit(3, arm=3), r"arm should be in 0..2, got 3"),
    ],
)
def test_bad_parameters(factory, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


# -- persistence ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: ISplitEE(7, c=0.5),
        lambda: DiscountedUCB(7, c=0.7, discount=0.99),
        lambda: RandomSplit(7, seed=4),
        lambda: FixedSplit(7, arm=3, label="fixed:12"),
    ],
)
def test_json_round_trip_gives_the_same_next_decisions(make) -> None:
    rm = RewardModel(paper_cost(BLOCKS))
    stream = synthetic_stream(2, 400, seed=9)
    conf = stream.confidences.tolist()
    p = make()
    open_decision = None
    for t in range(200):
        d = p.decide()
        if t == 150:
            open_decision = d  # an offload still waiting for its reply
            continue
        p.update(d, rm.revealed(d.arm, conf[t][: d.arm + 1], conf[t][-1]))
    q = policy_from_state(json.loads(json.dumps(p.to_state())))
    assert q.pending == p.pending == 1
    for t in range(200, 400):
        a, b = p.decide(), q.decide()
        assert a == b
        r = rm.revealed(a.arm, conf[t][: a.arm + 1], conf[t][-1])
        p.update(a, r)
        q.update(b, r)
    q.update(open_decision, {0: 0.0})  # the reply that was pending when the state was saved


def test_bad_state_is_a_clear_error() -> None:
    with pytest.raises(BanditError, match=r"invalid bandit state .*delete the state file"):
        policy_from_state({"version": 1, "policy": "isplitee"})
    with pytest.raises(BanditError, match=r"version 9 is not supported"):
        policy_from_state({"version": 9})
    with pytest.raises(BanditError, match=r"invalid bandit state"):
        policy_from_state({**ISplitEE(3).to_state(), "policy": "thompson"})


def test_discounted_variant_readapts_after_a_change_where_ucb1_lags() -> None:
    rm = RewardModel(paper_cost(BLOCKS))
    a, b = synthetic_stream(0, 3000, seed=1), synthetic_stream(3, 3000, seed=2)
    stream = Stream(
        np.concatenate([a.confidences, b.confidences]),
        np.concatenate([a.correct, b.correct]),
        (Segment("a", 0, 3000), Segment("b", 3000, 6000)),
    )
    ucb = run_policy(ISplitEE(7), stream, rm)
    dis = run_policy(DiscountedUCB(7), stream, rm)
    ucb_settle = settle_times(ucb.arms, stream.segments, [[0], [3]])
    dis_settle = settle_times(dis.arms, stream.segments, [[0], [3]])
    assert dis_settle[1] is not None and dis_settle[1] <= 500
    assert ucb_settle[1] is None  # UCB1's counts are too large to notice the change
    assert np.mean(dis.arms[4500:] == 3) >= 0.85
    assert dis.rewards.sum() > ucb.rewards.sum()

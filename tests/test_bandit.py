from __future__ import annotations

import json

import numpy as np
import pytest

from shared.cost import Observation, RewardModel, paper_cost
from shared.lab.simulate import Segment, Stream, run_policy, settle_times
from shared.policy import (
    BanditError,
    Decision,
    DiscountedUCB,
    FixedSplit,
    ISplitEE,
    build_policy,
    policy_from_state,
)

BLOCKS = (3, 6, 9, 12, 15, 18, 19)
RM = RewardModel(paper_cost(BLOCKS))


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


def _observe(p, d: Decision, row, *, audit: bool = False) -> None:
    """What a device would report for ``d`` on a sample with every exit's confidence ``row``."""
    last = p.n_arms - 1
    offload = d.arm != last and row[d.arm] < p.rewards.alpha
    final = row[-1] if (offload or d.arm == last or audit) else None
    p.observe(d, Observation(tuple(row[: d.arm + 1]), final, audit))


@pytest.mark.parametrize("best", [0, 1, 2, 3])
@pytest.mark.parametrize(
    ("spec", "share"),
    # the discounted variant forgets on purpose (about 200 rounds), so it keeps re-trying
    [("isplitee-paper", 0.9), ("isplitee-paper-nonstationary", 0.8)],
)
def test_finds_the_known_best_arm(best: int, spec: str, share: float) -> None:
    stream = synthetic_stream(best, 3000, seed=best)
    assert _best_arm(stream, RM) == best  # the table is what we think it is
    trace = run_policy(build_policy(spec, RM), stream)
    late = trace.arms[len(trace.arms) // 2 :]
    assert np.mean(late == best) >= share


def test_regret_grows_sublinearly() -> None:
    stream = synthetic_stream(2, 8000, seed=5)
    full = RM.reward_matrix(stream.confidences)
    trace = run_policy(build_policy("isplitee-paper", RM), stream)
    regret = np.cumsum(full[:, 2]) - np.cumsum(trace.rewards)
    first, second = regret[3999], regret[-1] - regret[3999]
    assert first > 0 and second < 0.5 * first


# -- issue 10: the toy where side observations used to bias the means -------------------------
def toy_stream(n: int, seed: int) -> Stream:
    """Arm 0's confidence uniform on [0.2, 1], every other exit's on [0.9, 1]; all right.

    True means (paper constants): arm 0 0.3375, arm 1 0.35. Exit 0 is unsure on 3/8 of the
    samples, and those are the ones a deeper exit answers without C_L: skipping them, as the
    paper's update does, made arm 0 look like 0.364 and kept I-SplitEE on it.
    """
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.9, 1.0, (n, len(BLOCKS)))
    conf[:, 0] = rng.uniform(0.2, 1.0, n)
    return Stream(conf, np.ones(conf.shape, bool), (Segment("toy", 0, n),))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_toy_means_are_learnt_without_bias_and_regret_stops_growing(seed: int) -> None:
    n = 20_000
    stream = toy_stream(n, seed)
    full = RM.reward_matrix(stream.confidences)
    true = full.mean(axis=0)
    assert true[0] == pytest.approx(0.3375, abs=0.005) and int(np.argmax(true)) == 1
    policy = build_policy("isplitee-paper", RM)
    trace = run_policy(policy, stream)
    learnt = policy.estimates()
    # the two arms the bias was about, each seen on thousands of samples
    assert abs(learnt[0] - true[0]) <= 0.005 and abs(learnt[1] - true[1]) <= 0.005
    # the others are clearly worse, so they are seen rarely: each within its own sampling error
    for arm, stats in enumerate(policy.arm_stats()):
        assert abs(learnt[arm] - true[arm]) <= 0.005 + 0.25 / np.sqrt(stats["count"])
    assert np.mean(trace.arms[n // 2 :] == 1) >= 0.9
    regret = np.cumsum(full[:, 1] - trace.rewards)
    first, last = regret[n // 4 - 1], regret[-1] - regret[3 * n // 4 - 1]
    assert first > 0 and last <= first / 4


# -- what each observation feeds, checked by hand -----------------------------------------------
# Three arms at blocks 3, 9, 19 with the paper's constants: edge cost 0.3, 0.9, 1.9; offload 0.5.
HAND = RewardModel(paper_cost((3, 9, 19)))


def _hand_policy() -> FixedSplit:
    return FixedSplit(HAND, arm=0)


def _settle(p, arm: int, conf, final, audit: bool = False) -> None:
    """Observe one sample as if ``arm`` had been decided (a fixed split decides its own arm)."""
    p.arm = arm
    p.observe(p.decide(), Observation(tuple(conf), final, audit))


def test_early_exit_feeds_the_exit_statistics_but_no_censored_mean() -> None:
    p = _hand_policy()
    _settle(p, 1, (0.4, 0.8), None)  # arm 1 exits; arm 0 would have offloaded, C_L unknown
    s = p.arm_stats()
    assert s[0]["count"] == 1 and s[0]["exit_rate"] == 0 and s[0]["censored_count"] == 0
    assert s[1]["count"] == 1 and s[1]["exit_rate"] == 1 and s[1]["exit_confidence"] == 0.8
    assert s[2]["count"] == 0 and p.estimates()[2] is None


def test_a_deeper_offload_does_not_feed_a_shallower_censored_mean() -> None:
    p = _hand_policy()
    # arm 1 offloads and the cloud says C_L 0.9; arm 0 was unsure too, but this C_L was
    # revealed because exit 1 was unsure as well: a harder image than arm 0's offloads
    _settle(p, 1, (0.4, 0.3), 0.9)
    s = p.arm_stats()
    assert s[0]["censored_count"] == 0 and s[0]["final_confidence_when_unsure"] is None
    assert s[1]["censored_count"] == 1 and s[1]["final_confidence_when_unsure"] == 0.9
    assert p.estimates()[1] == pytest.approx(0.9 - (0.9 + 0.5))
    assert s[2]["count"] == 0  # C_L revealed because of the exits: not the last arm's mean


def test_the_last_arm_and_an_audit_feed_every_censored_mean() -> None:
    p = _hand_policy()
    _settle(p, 2, (0.4, 0.3, 0.7), 0.7)
    s = p.arm_stats()
    assert [a["censored_count"] for a in s] == [1, 1, 1]
    assert p.estimates() == pytest.approx([0.7 - 0.8, 0.7 - 1.4, 0.7 - 1.9])
    _settle(p, 1, (0.2, 0.9), 0.5, audit=True)  # exit 1 answered, the frame went anyway
    s = p.arm_stats()
    assert s[0]["censored_count"] == 2 and s[0]["final_confidence_when_unsure"] == 0.6
    assert s[1]["censored_count"] == 1 and s[1]["exit_rate"] == 0.5
    assert s[2]["count"] == 2 and p.estimates()[2] == pytest.approx(0.6 - 1.9)


def test_estimates_are_priced_with_the_current_costs() -> None:
    p = _hand_policy()
    _settle(p, 2, (0.4, 0.8, 0.7), 0.7)
    assert p.estimates()[0] == pytest.approx(0.7 - 0.8)
    p.set_rewards(RewardModel(paper_cost((3, 9, 19), offload=2.0)))
    assert p.estimates()[0] == pytest.approx(0.7 - 2.3)  # nothing learnt again
    with pytest.raises(BanditError, match=r"alpha cannot change under a running policy"):
        p.set_rewards(RewardModel(paper_cost((3, 9, 19)), alpha=0.7))
    with pytest.raises(BanditError, match=r"the new cost model has 7 arms, this policy 3"):
        p.set_rewards(RM)


def test_a_dearer_link_moves_the_very_next_decision() -> None:
    # toy stream: arm 0 offloads 3/8 of its samples; with cheap offloads it is the best split
    cheap = RewardModel(paper_cost(BLOCKS, offload=0.3))
    p = build_policy("isplitee-paper", cheap, c=0.0)
    run_policy(p, toy_stream(3000, seed=4))
    assert p.decide().arm == 0
    p.set_rewards(RM)  # offload 0.5: arm 1 (never offloads) is now the best
    assert p.decide().arm == 1


# -- misuse --------------------------------------------------------------------------------------
def test_observe_twice_is_an_error() -> None:
    p = build_policy("isplitee-paper", HAND)
    d = p.decide()  # the last arm first: it reveals every exit
    assert d.arm == 2
    p.observe(d, Observation((0.5, 0.5, 0.5), 0.5))
    with pytest.raises(BanditError, match=r"decision 0 was already settled"):
        p.observe(d, Observation((0.5, 0.5, 0.5), 0.5))
    with pytest.raises(BanditError, match=r"decision 0 was already settled"):
        p.cancel(d)


def test_observe_a_decision_never_made() -> None:
    p = build_policy("isplitee-paper", HAND)
    with pytest.raises(BanditError, match=r"decision 7 was never made"):
        p.observe(7, Observation((0.5,), None))
    with pytest.raises(BanditError, match=r"decision 0 was never made"):
        p.observe(Decision(0, 0), Observation((0.5,), None))
    p.decide()
    with pytest.raises(BanditError, match=r"a decision is a Decision or its id, got False"):
        p.observe(False, Observation((0.5,), None))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("obs", "match"),
    [
        (Observation((0.5, 0.5), 0.5), r"it computes 3 exit confidences \(exits 0..2\), got 2"),
        (Observation(None, 0.5), r"it computes 3 exit confidences .*got None"),  # type: ignore[arg-type]
        (Observation((0.5, float("nan"), 0.5), 0.5), r"exit 1 should be a number in \[0, 1\]"),
        (Observation((0.5, True, 0.5), 0.5), r"exit 1 should be a number in \[0, 1\], got True"),
        (Observation((0.5, 0.5, 1.5), 1.5), r"exit 2 should be a number in \[0, 1\], got 1.5"),
        (Observation((0.5, 0.5, 0.5), None), r"final_confidence is its last exit's confidence"),
        (Observation((0.5, 0.5, 0.5), 0.4), r"final_confidence is its last exit's confidence"),
        (Observation((0.5, 0.5, 0.5), "0.5"), r"final_confidence should be a number"),  # type: ignore[arg-type]
        (Observation((0.5, 0.5, 0.5), 0.5, None), r"audit should be a bool, got None"),  # type: ignore[arg-type]
    ],
)
def test_a_bad_observation_learns_nothing_and_leaves_the_decision_open(obs, match) -> None:
    p = build_policy("isplitee-paper", HAND)
    d = p.decide()
    with pytest.raises(BanditError, match=match):
        p.observe(d, obs)
    assert p.pending == 1 and p.arm_stats()[0]["count"] == 0
    with pytest.raises(BanditError, match=r"chose arm 2, not 1"):
        p.observe(Decision(d.id, 1), Observation((0.5, 0.5), None))
    p.observe(d, Observation((0.5, 0.5, 0.5), 0.5))
    assert p.pending == 0 and p.arm_stats()[0]["count"] == 1


def test_c_l_after_a_confident_exit_needs_the_audit_flag() -> None:
    p = FixedSplit(HAND, arm=1)
    d = p.decide()
    with pytest.raises(BanditError, match=r"exit 1 was confident .*pass audit=True"):
        p.observe(d, Observation((0.4, 0.8), 0.9))
    p.observe(d, Observation((0.4, 0.8), 0.9, audit=True))
    assert p.arm_stats()[0]["censored_count"] == 1


def test_delayed_observations_cancel_and_lost_replies() -> None:
    p = FixedSplit(HAND, arm=1)
    ds = [p.decide() for _ in range(3)]
    assert p.pending == 3
    p.observe(ds[2], Observation((0.2, 0.3), 0.6))
    p.cancel(ds[0])
    p.observe(ds[1], Observation((0.6, 0.3), None))  # offloaded, the reply never came
    s = p.arm_stats()
    assert p.pending == 0
    assert s[0]["count"] == 2 and s[0]["exit_rate"] == 0.5  # the exits still count
    assert s[1]["count"] == 2 and s[1]["censored_count"] == 1


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: ISplitEE(RM, c=-1), "exploration c should be a finite number >= 0, got -1"),
        (lambda: ISplitEE(RM, c=float("inf")), "exploration c should be a finite number >= 0"),
        (lambda: DiscountedUCB(RM, discount=1.0), r"discount should be in \(0, 1\), got 1.0"),
        (lambda: FixedSplit(RM, arm=7), r"arm should be in 0..6, got 7"),
        (lambda: FixedSplit(RM, arm=True), r"arm should be in 0..6, got True"),
        (lambda: build_policy("ts", RM), r"unknown policy 'ts'"),
        (lambda: build_policy("fixed:4", RM), r"BLOCK should be one of the model's blocks"),
        (lambda: build_policy("final", RM, c=1.0), r"'final' does not explore"),
        (
            lambda: build_policy("isplitee-paper", RM, discount=0.9),
            r"'isplitee-paper' does not discount",
        ),
    ],
)
def test_bad_parameters(factory, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


def test_build_policy_specs() -> None:
    assert build_policy("fixed:12", RM).decide().arm == 3
    assert build_policy("final", RM).spec == "final"
    p = build_policy("isplitee-paper-nonstationary", RM, c=0.5, discount=0.9)
    assert (p.c, p.discount, p.spec) == (0.5, 0.9, "isplitee-paper-nonstationary")
    assert build_policy("isplitee-paper", RM).c == ISplitEE.DEFAULT_C


# -- persistence ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: build_policy("isplitee-paper", RM, c=0.5),
        lambda: build_policy("isplitee-paper-nonstationary", RM, c=0.7, discount=0.99),
        lambda: build_policy("random", RM, seed=4),
        lambda: build_policy("fixed:12", RM),
    ],
)
def test_json_round_trip_gives_the_same_next_decisions(make) -> None:
    stream = synthetic_stream(2, 400, seed=9)
    conf = stream.confidences.tolist()
    p = make()
    open_decision = None
    for t in range(200):
        d = p.decide()
        if t == 150:
            open_decision = (d, conf[t])  # an offload still waiting for its reply
            continue
        _observe(p, d, conf[t])
    q = policy_from_state(json.loads(json.dumps(p.to_state())), RM)
    assert q.pending == p.pending == 1 and q.spec == p.spec
    for a, b in zip(q.arm_stats(), p.arm_stats(), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert (a[key] is None and b[key] is None) or a[key] == pytest.approx(b[key]), key
    for t in range(200, 400):
        a, b = p.decide(), q.decide()
        assert a == b
        _observe(p, a, conf[t])
        _observe(q, b, conf[t])
    d, row = open_decision
    _observe(q, d, row)  # the reply that was pending when the state was saved


def _state(**changes) -> dict:
    p = build_policy("isplitee-paper", HAND)
    for _ in range(4):
        _observe(p, p.decide(), (0.3, 0.6, 0.8))
    p.decide()  # one pending
    state = json.loads(json.dumps(p.to_state()))
    for key, value in changes.items():
        where, _, leaf = key.rpartition(".")
        (state[where] if where else state)[leaf] = value
    return state


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"stats.n": [1.0, 1.0]}, r"stats.n should be 3 finite numbers >= 0"),
        ({"stats.s": [0.0, 0.0, 0.0, 1.0]}, r"stats.s should be 3 finite numbers >= 0"),
        ({"stats.f": [0.0, None, 0.0]}, r"stats.f should be 3 finite numbers"),
        ({"stats.m": [0.0, True, 0.0]}, r"stats.m should be 3 finite numbers"),
        ({"stats.e": [99.0, 0.0, 0.0]}, r"stats of arm 0 are inconsistent"),
        ({"pending": [[4, 3]]}, r"pending decision \[4, 3\] is outside"),
        ({"pending": [[4, False]]}, r"pending decision \[4, False\] is outside"),
        ({"pending": [[9, 0]]}, r"pending decision \[9, 0\] is outside"),
        ({"pending": [[4, 0], [4, 1]]}, r"pending decision 4 appears twice"),
        ({"pending": [[4]]}, r"invalid bandit state"),
        ({"rounds": -1}, r"rounds and next_id should be integers >= 0"),
        ({"params": {"c": -1}}, r"exploration c should be a finite number >= 0"),
        ({"params": {"c": 1, "discount": 0.9}}, r"unexpected keyword argument 'discount'"),
        ({"policy": "thompson"}, r"unknown policy 'thompson'"),
        ({"n_arms": 7}, r"the state has 7 arms, the model 3"),
        ({"alpha": 0.8}, r"learnt with alpha 0.8, the node uses 0.5"),
        ({"stats": [1, 2]}, r"invalid bandit state"),
    ],
)
def test_a_bad_state_is_refused_at_load_time(changes: dict, match: str) -> None:
    with pytest.raises(BanditError, match=match) as info:
        policy_from_state(_state(**changes), HAND)
    assert "delete the state file" in str(info.value)


def test_bad_state_shapes_are_clear_errors() -> None:
    with pytest.raises(BanditError, match=r"invalid bandit state .*delete the state file"):
        policy_from_state({"version": 3, "policy": "isplitee-paper"}, HAND)
    with pytest.raises(BanditError, match=r"version 9 is not supported.*delete the state file"):
        policy_from_state({"version": 9}, HAND)
    with pytest.raises(BanditError, match=r"state should be a mapping, got list"):
        policy_from_state([1, 2], HAND)  # type: ignore[arg-type]
    assert policy_from_state(_state(), HAND).pending == 1


def test_discounted_variant_readapts_after_a_change_where_ucb1_lags() -> None:
    a, b = synthetic_stream(0, 3000, seed=1), synthetic_stream(3, 3000, seed=2)
    stream = Stream(
        np.concatenate([a.confidences, b.confidences]),
        np.concatenate([a.correct, b.correct]),
        (Segment("a", 0, 3000), Segment("b", 3000, 6000)),
    )
    ucb = run_policy(build_policy("isplitee-paper", RM), stream)
    dis = run_policy(build_policy("isplitee-paper-nonstationary", RM), stream)
    ucb_settle = settle_times(ucb.arms, stream.segments, [[0], [3]])
    dis_settle = settle_times(dis.arms, stream.segments, [[0], [3]])
    assert dis_settle[1] is not None and dis_settle[1] <= 500
    assert ucb_settle[1] is None or ucb_settle[1] > dis_settle[1]  # UCB's counts are larger
    assert np.mean(dis.arms[4500:] == 3) >= 0.85
    assert dis.rewards.sum() > ucb.rewards.sum()

"""The referee and the audited policy (issue 7): exits answer only while audits show they
agree with the final classifier, trust is withdrawn within a stated bound after a change, and
audit bookkeeping learns only what a sample revealed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.bandit import BanditError, build_policy, policy_from_state
from shared.cost import CostModel, Observation, RewardModel, paper_cost
from shared.lab.simulate import Segment, Stream, run_policy
from shared.referee import AuditedSplitEE, Referee, wilson_bounds

BLOCKS = (3, 6, 9, 12, 15, 18, 19)
RM = RewardModel(paper_cost(BLOCKS), alpha=0.8)


def turncoat_stream(n: int, turn: int, *, seed: int = 0) -> Stream:
    """Exit 0 (block 3) is always confident (0.95, so its confidences never move) and agrees
    with the final classifier until ``turn``, then answers a wrong class on every frame; the
    other exits are unsure, the final classifier confident and right."""
    rng = np.random.default_rng(seed)
    k = len(BLOCKS)
    conf = np.full((n, k), 0.3) + rng.uniform(0.0, 0.1, (n, k))
    conf[:, 0] = 0.95
    conf[:, -1] = 0.9
    labels = rng.integers(0, 10, n)
    classes = np.repeat(labels[:, None], k, axis=1)
    classes[turn:, 0] = (labels[turn:] + 1) % 10
    correct = classes == labels[:, None]
    return Stream(conf, correct, (Segment("steady", 0, turn), Segment("turned", turn, n)), classes)


def test_wilson_bounds() -> None:
    assert wilson_bounds(0, 0, 2.0) == (0.0, 1.0)
    lo, hi = wilson_bounds(0, 196, 2.0)
    assert lo == 0.0 and hi == pytest.approx(4 / 200)
    lo, hi = wilson_bounds(50, 100, 2.0)
    assert lo < 0.5 < hi and hi - 0.5 == pytest.approx(0.5 - lo)


def test_a_flawless_exit_earns_trust_after_the_stated_number_of_audits() -> None:
    ref = Referee(1, target=0.02, z=2.0)
    assert ref.clean_audits == pytest.approx(4 * 0.98 / 0.02)  # z^2 (1 - target) / target
    n = 0
    while not ref.trusted(0):
        ref.record([0.95], [1], 1, 0.8)
        n += 1
    assert n == ref.audits_to_trust() == 251  # 196 discounted by the memory of 490 audits
    assert ref.audits_needed(0.0) == pytest.approx(ref.clean_audits, rel=1e-6)
    assert ref.audits_needed(0.02) == math.inf


def test_an_exit_that_turns_confidently_wrong_is_distrusted_within_the_stated_bound() -> None:
    """Acceptance: the policy stops trusting exit 0 within ceil(1 / min_rate) decisions (the
    next audit) plus Referee.disagreements_to_distrust() audits, and publishes at most
    ceil(1 / min_rate) wrong answers from it, although its confidence never changes."""
    n, turn = 4000, 2000
    stream = turncoat_stream(n, turn)
    policy = build_policy("isplitee", RM)
    assert isinstance(policy, AuditedSplitEE)
    ref = policy.referee
    trusted_at = []
    conf, classes = stream.confidences.tolist(), stream.classes.tolist()
    published_wrong_after = 0
    for t in range(n):
        d = policy.decide()
        c, k = conf[t], classes[t]
        known = d.audit or c[d.arm] < RM.alpha
        if t >= turn and not known and d.arm == 0:
            published_wrong_after += 1
        policy.observe(
            d,
            Observation(
                tuple(c[: d.arm + 1]),
                c[-1] if known else None,
                audit=d.audit,
                classes=tuple(k[: d.arm + 1]),
                final_class=k[-1] if known else None,
            ),
        )
        trusted_at.append(ref.trusted(0))
    assert trusted_at[turn - 1], "exit 0 should be trusted before it turns"
    assert ref.changes == 0  # its confidences never moved: only audits can tell
    next_audit = math.ceil(1 / ref.min_rate)
    bound = next_audit + ref.disagreements_to_distrust()
    assert bound == 24  # the stated figure for the defaults: 20 + 4
    distrusted = next(t for t in range(turn, n) if not trusted_at[t]) - turn + 1
    assert distrusted <= bound, (distrusted, bound)
    assert not any(trusted_at[turn + bound :])  # and it stays distrusted
    assert published_wrong_after <= next_audit
    # the paper's rule keeps answering from the confident exit
    paper = run_policy(build_policy("isplitee-paper", RM), stream)
    audited = run_policy(build_policy("isplitee", RM), stream)
    assert paper.correct[turn:].mean() < 0.2
    assert audited.correct[turn:].mean() >= 1.0 - next_audit / (n - turn)


def test_disagreements_to_distrust_matches_the_referee() -> None:
    ref = Referee(1)
    for _ in range(1000):
        ref.record([0.95], [1], 1, 0.8)
    assert ref.trusted(0)
    k = ref.disagreements_to_distrust(agreeing=ref._n[0])
    assert k <= ref.disagreements_to_distrust() == 4  # 4: the memory full of agreeing audits
    for i in range(k):
        assert ref.trusted(0), i
        ref.record([0.95], [2], 1, 0.8)
    assert not ref.trusted(0)


def test_audits_fall_to_the_minimum_rate_while_exits_agree_and_jump_after_a_change() -> None:
    ref = Referee(2, min_rate=0.05, decay=0.9)
    assert ref.rate == 1.0  # nothing known yet: audit everything
    for _ in range(300):
        ref.record([0.95, 0.9], [3, 3], 3, 0.8)
    assert ref.rate == pytest.approx(0.05)
    schedule = [ref.audit_now() for _ in range(100)]
    assert sum(schedule) == 5 and schedule[19] and not any(schedule[:19])
    ref.record([0.95, 0.9], [4, 3], 3, 0.8)  # a trusted exit disagrees
    assert ref.rate == 1.0
    # a shift in how often exit 0 is confident (seen on every frame) forgets and re-audits
    for _ in range(300):
        ref.record([0.95, 0.9], [3, 3], 3, 0.8)
        ref.watch(0.95, 0.8)
    assert ref.trusted(0) and ref.rate < 1.0
    fired = [ref.watch(0.2, 0.8) for _ in range(60)]
    assert any(fired) and ref.changes == 1
    assert not ref.trusted(0) and ref.rate == 1.0


def test_cold_start_then_cheaper_than_offloading_everything_at_the_final_accuracy() -> None:
    stream = turncoat_stream(3000, 3000)  # exit 0 never turns
    trace = run_policy(build_policy("isplitee", RM), stream)
    everything = run_policy(build_policy("offload-all", RM), stream)
    assert everything.audited.all() and everything.costs.mean() == pytest.approx(0.8)
    assert trace.correct.mean() == 1.0
    assert trace.costs.mean() < 0.5  # exits at block 3 (0.3) once trusted, audits included
    assert 0.05 < trace.audited.mean() < 0.2


def test_where_the_device_is_cheaper_than_the_link_audits_run_the_whole_network_locally() -> None:
    """A fast device behind a slow link: an offload at any split costs more than the whole
    network on the device, so the referee's samples come from the last arm (no offload at
    all), exits are still trusted after the same number of agreeing samples, and the policy
    costs less than running every frame to the end. Under the paper's costs the same stream
    is audited by offloads (test above)."""
    dear_link = CostModel(
        name="dear-link", blocks=BLOCKS, edge=RM.cost.edge, offload=(10.0,) * len(BLOCKS)
    )
    rm = RewardModel(dear_link, alpha=0.8)
    stream = turncoat_stream(3000, 3000)  # exit 0 agrees throughout
    policy = build_policy("isplitee", rm)
    trace = run_policy(policy, stream)
    assert not trace.audited.any() and policy.audit_rate == 0.0
    last = len(BLOCKS) - 1
    arms = np.asarray(trace.arms)
    assert (arms[: policy.referee.audits_to_trust() - 1] == last).all()  # earning trust
    assert (arms[1000:] == 0).mean() > 0.9  # then exit 0 answers, 5 % referee samples
    assert trace.correct.all()
    assert trace.costs.mean() < 0.5 * dear_link.full_cost
    # the paper's costs: the same stream is audited by offloading at block 3
    paper = run_policy(build_policy("isplitee", RM), stream)
    assert paper.audited.mean() > 0.05


def test_untrustworthy_exits_never_publish() -> None:
    """An exit confidently wrong from the start never answers: every frame the audited
    policy plays at a split is an audit (the offload-all baseline's cost and accuracy)."""
    stream = turncoat_stream(1500, 0)
    trace = run_policy(build_policy("isplitee", RM), stream)
    assert trace.correct.all()
    assert trace.costs.mean() <= 0.8 * 1.05


def test_decisions_carry_the_audit_flag_and_the_rate_is_reported() -> None:
    p = build_policy("offload-all", RM)
    d = p.decide()
    assert (d.arm, d.audit) == (0, True) and p.audit_rate == 1.0
    q = build_policy("final", RM)
    assert q.decide().audit is False and q.audit_rate == 0.0
    a = build_policy("isplitee", RM)
    d = a.decide()
    assert d.audit and d.arm == 0  # nothing trusted yet: audit at the cheapest split
    stats = a.arm_stats()
    assert {"agreement", "trusted"} <= set(stats[0]) and stats[0]["trusted"] is False


def test_observation_classes_are_checked() -> None:
    p = build_policy("isplitee", RM)
    d = p.decide()
    with pytest.raises(BanditError, match=r"classes should be 1 integers"):
        p.observe(d, Observation((0.9,), 0.8, audit=True, classes=(1, 2), final_class=1))
    with pytest.raises(BanditError, match=r"final_class given without final_confidence"):
        p.observe(d, Observation((0.3,), None, audit=True, classes=(1,), final_class=1))
    with pytest.raises(BanditError, match=r"final_class should be an integer"):
        p.observe(d, Observation((0.9,), 0.8, audit=True, classes=(1,), final_class="1"))
    p.observe(d, Observation((0.9,), 0.8, audit=True, classes=(1,), final_class=1))


def test_build_policy_referee_options() -> None:
    p = build_policy("isplitee", RM, target=0.01, min_audit_rate=0.1)
    assert p.referee.target == 0.01 and p.referee.min_rate == 0.1 and p.spec == "isplitee"
    ns = build_policy("isplitee-nonstationary", RM)
    assert ns.discount == AuditedSplitEE.DEFAULT_DISCOUNT and ns.spec == "isplitee-nonstationary"
    with pytest.raises(ValueError, match=r"'isplitee-paper' has no referee: target applies"):
        build_policy("isplitee-paper", RM, target=0.01)
    with pytest.raises(ValueError, match=r"target should be in \(0, 1\], got 0"):
        build_policy("isplitee", RM, target=0)
    with pytest.raises(ValueError, match=r"min_rate 0.5 should be at most max_rate 0.2"):
        Referee(2, min_rate=0.5, max_rate=0.2)


@pytest.mark.parametrize("spec", ["isplitee", "isplitee-nonstationary", "offload-all"])
def test_json_round_trip_gives_the_same_next_decisions(spec: str) -> None:
    stream = turncoat_stream(900, 600, seed=2)
    conf, classes = stream.confidences.tolist(), stream.classes.tolist()

    def feed(p, t):
        d = p.decide()
        c, k = conf[t], classes[t]
        known = d.audit or c[d.arm] < RM.alpha
        p.observe(
            d,
            Observation(
                tuple(c[: d.arm + 1]),
                c[-1] if known else None,
                audit=d.audit,
                classes=tuple(k[: d.arm + 1]),
                final_class=k[-1] if known else None,
            ),
        )
        return d

    p = build_policy(spec, RM)
    for t in range(500):
        feed(p, t)
    open_decision = p.decide()
    restored = policy_from_state(json.loads(json.dumps(p.to_state())), RM)
    assert restored.pending == 1 and restored.audits == p.audits
    assert restored.arm_stats() == p.arm_stats()
    restored.cancel(open_decision)
    p.cancel(open_decision)
    for t in range(500, 900):
        assert feed(p, t) == feed(restored, t)
    assert restored.to_state()["extra"].get("referee") == p.to_state()["extra"].get("referee")


# -- property: audits feed only what a sample revealed ------------------------------------------
rows = st.lists(
    st.tuples(
        st.lists(st.floats(0.0, 1.0), min_size=7, max_size=7),
        st.lists(st.integers(0, 2), min_size=7, max_size=7),
        st.booleans(),  # the cloud's reply arrives
    ),
    min_size=1,
    max_size=120,
)


@settings(max_examples=60, deadline=None)
@given(rows=rows, forced=st.booleans())
def test_audit_bookkeeping_learns_only_what_the_sample_revealed(rows, forced: bool) -> None:
    """Per observation: the referee counts a sample only if its final class was revealed
    independently of the exits (an audit or the whole network), only for exits the device
    computed, and a disagreement only where the exit was confident and its class differs;
    the bandit's censored mean of an exit grows only from a C_L that sample revealed."""
    p = AuditedSplitEE(RM, referee={"shift": 1.0})  # no change detector: no resets here
    ref, last, alpha = p.referee, RM.last, RM.alpha
    for c, k, replied in rows:
        d = p.decide()
        arm = d.arm
        audit = d.audit or (forced and arm != last)
        offload = arm != last and (audit or c[arm] < alpha)
        known = arm == last or (offload and replied)
        obs = Observation(
            tuple(c[: arm + 1]),
            c[last] if known else None,
            audit=audit,
            classes=tuple(k[: arm + 1]),
            final_class=k[last] if known else None,
        )
        n0, d0, m0 = list(ref._n), list(ref._d), list(p._m)
        p.observe(d, obs)
        for j in range(last):
            counted = ref._n[j] != ref.memory * n0[j]
            revealed = j <= arm and known and (audit or arm == last)
            assert counted == revealed or (not revealed and ref._n[j] == n0[j])
            if revealed:
                wrong = c[j] >= alpha and k[j] != k[last]
                assert ref._d[j] == pytest.approx(ref.memory * d0[j] + wrong)
            else:
                assert (ref._n[j], ref._d[j]) == (n0[j], d0[j])
            if p._m[j] != m0[j]:  # the censored part learnt C_L for exit j
                assert known and c[j] < alpha and j <= arm
                assert j == arm or audit or arm == last


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), spec=st.sampled_from(["isplitee", "isplitee-nonstationary"]))
def test_what_a_sample_did_not_reveal_changes_nothing(seed: int, spec: str) -> None:
    """Through the simulator: scramble, on every frame, the exits deeper than the split and
    the final layer's confidence and class where nobody computed them; the audited policy
    makes the same decisions and ends in the same state."""
    rng = np.random.default_rng(seed)
    n, k = 400, len(BLOCKS)
    conf = rng.uniform(0.5, 1.0, (n, k))
    classes = rng.integers(0, 3, (n, k))
    stream = Stream(conf, classes == 0, (Segment("s", 0, n),), classes)
    first = build_policy(spec, RM)
    trace = run_policy(first, stream)
    conf2, classes2 = conf.copy(), classes.copy()
    for t in range(n):
        arm = trace.arms[t]
        hidden = max(k - 2 - arm, 0)  # exits deeper than the split, the final layer aside
        conf2[t, arm + 1 : k - 1] = rng.uniform(0.0, 1.0, hidden)
        classes2[t, arm + 1 : k - 1] = rng.integers(0, 3, hidden)
        if not (trace.offloaded[t] or arm == k - 1):
            conf2[t, -1], classes2[t, -1] = rng.uniform(), rng.integers(0, 3)
    second = build_policy(spec, RM)
    trace2 = run_policy(second, Stream(conf2, classes2 == 0, stream.segments, classes2))
    assert (trace2.arms == trace.arms).all() and (trace2.audited == trace.audited).all()
    assert second.to_state() == first.to_state()

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

from shared.cost import CostModel, Observation, RewardModel, paper_cost
from shared.lab.simulate import Segment, Stream, run_policy
from shared.policy import (
    THRESHOLDS,
    AuditedSplitEE,
    BanditError,
    Decision,
    Referee,
    build_policy,
    policy_from_state,
    wilson_audits_needed,
    wilson_bounds,
)

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


def feed(policy, c: list[float], k: list[int]) -> Decision:
    """One frame through the policy as a device would: decide, then observe what the frame
    revealed (C_L and the final class only when it was offloaded or ran to the end)."""
    d = policy.decide()
    last = len(c) - 1
    known = d.arm == last or d.audit or not d.answers(c[d.arm], policy.rewards.alpha)
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
    return d


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
        c = conf[t]
        d = feed(policy, c, classes[t])
        if t >= turn and d.arm == 0 and not d.audit and d.answers(c[0], RM.alpha):
            published_wrong_after += 1
        # trusted to answer these frames: trusted at a threshold its confidence 0.95 reaches
        trusted_at.append(ref.trusted(0) and c[0] >= ref.threshold(0, RM.alpha))
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
    k = ref.disagreements_to_distrust(agreeing=ref.agreement.n[0])
    assert k <= ref.disagreements_to_distrust() == 4  # 4: the memory full of agreeing audits

    def upper_at_alpha() -> float:
        return wilson_bounds(ref.agreement.d[0][0], ref.agreement.n[0], ref.z)[1]

    for i in range(k):
        assert ref.trusted(0) and ref.threshold(0, 0.8) == 0.8, i
        assert upper_at_alpha() <= ref.target, i
        ref.record([0.95], [2], 1, 0.8)
    assert upper_at_alpha() > ref.target  # exactly k disagreements withdraw trust at alpha
    # and at every threshold its 0.95 reaches: it answers only at 0.98 now, where no audit
    # has seen it disagree (so it never answers these frames)
    assert ref.threshold(0, 0.8) == 0.98 and ref.trusted(0)


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

    p = build_policy(spec, RM)
    for t in range(500):
        feed(p, conf[t], classes[t])
    open_decision = p.decide()
    restored = policy_from_state(json.loads(json.dumps(p.to_state())), RM)
    assert restored.pending == 1 and restored.audits == p.audits
    assert restored.arm_stats() == p.arm_stats()
    restored.cancel(open_decision)
    p.cancel(open_decision)
    for t in range(500, 900):
        assert feed(p, conf[t], classes[t]) == feed(restored, conf[t], classes[t])
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
        offload = arm != last and (audit or not d.answers(c[arm], alpha))
        known = arm == last or (offload and replied)
        obs = Observation(
            tuple(c[: arm + 1]),
            c[last] if known else None,
            audit=audit,
            classes=tuple(k[: arm + 1]),
            final_class=k[last] if known else None,
        )
        counts = ref.agreement
        n0, d0, m0 = list(counts.n), [list(x) for x in counts.d], p.to_state()["stats"]["m"]
        p.observe(d, obs)
        m1 = p.to_state()["stats"]["m"]
        for j in range(last):
            counted = counts.n[j] != ref.memory * n0[j]
            revealed = j <= arm and known and (audit or arm == last)
            assert counted == revealed or (not revealed and counts.n[j] == n0[j])
            if revealed:  # a disagreement at each threshold the exit was confident at
                for level, tau in enumerate((alpha, *THRESHOLDS)):
                    wrong = c[j] >= tau and k[j] != k[last]
                    assert counts.d[j][level] == pytest.approx(ref.memory * d0[j][level] + wrong)
            else:
                assert (counts.n[j], counts.d[j]) == (n0[j], d0[j])
            if m1[j] != m0[j]:  # the censored part learnt C_L for exit j
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


# -- per-exit thresholds -------------------------------------------------------------------------
def _bisect_audits_needed(rate: float, target: float, z: float) -> float:
    """The referee's former search: smallest n with the Wilson upper bound <= target."""
    lo, hi = 1.0, 2.0
    while wilson_bounds(rate * hi, hi, z)[1] > target:
        lo, hi = hi, hi * 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if wilson_bounds(rate * mid, mid, z)[1] > target else (lo, mid)
    return hi


@pytest.mark.parametrize("target", [0.01, 0.02, 0.05, 0.2])
@pytest.mark.parametrize("z", [1.0, 2.0, 3.0])
def test_audits_needed_in_closed_form_is_the_smallest_n_the_bound_allows(target, z) -> None:
    for rate in np.linspace(0.0, target, 25, endpoint=False):
        n = wilson_audits_needed(float(rate), target, z)
        assert n == pytest.approx(_bisect_audits_needed(float(rate), target, z), rel=1e-9)
        assert wilson_bounds(rate * n * (1 + 1e-9), n * (1 + 1e-9), z)[1] <= target + 1e-12
    assert wilson_audits_needed(target, target, z) == math.inf


def shy_exit_stream(n: int, *, seed: int = 0) -> Stream:
    """Exit 0 (block 3) is confident on every frame, but below 0.95 it answers a wrong class
    on a third of them (a clean-trained model under blur); at 0.95 or more it always agrees
    with the final classifier. The other exits are unsure, the final one sure and right."""
    rng = np.random.default_rng(seed)
    k = len(BLOCKS)
    conf = np.full((n, k), 0.3) + rng.uniform(0.0, 0.1, (n, k))
    conf[:, 0] = rng.uniform(0.8, 1.0, n)
    conf[:, -1] = 0.9
    labels = rng.integers(0, 10, n)
    classes = np.repeat(labels[:, None], k, axis=1)
    wrong = (conf[:, 0] < 0.95) & (rng.uniform(size=n) < 1 / 3)
    classes[wrong, 0] = (labels[wrong] + 1) % 10
    return Stream(conf, classes == labels[:, None], (Segment("blur", 0, n),), classes)


def test_an_exit_wrong_at_alpha_but_right_when_surer_answers_at_its_own_threshold() -> None:
    """At alpha 0.8 exit 0 disagrees on about 1/3 of the 75 % of frames below 0.95: never
    trusted there, so the old rule could only offload everything (0.8 a frame). The referee
    refutes 0.8 and 0.9, settles on 0.95, earns trust there, and the exit then answers the
    quarter of frames it is that sure of, always in agreement: cheaper than offload-all at the
    final layer's accuracy."""
    n = 4000
    stream = shy_exit_stream(n)
    policy = build_policy("isplitee", RM)
    trace = run_policy(policy, stream)
    ref = policy.referee
    assert ref.threshold(0, RM.alpha) == 0.95 and ref.level(0) == THRESHOLDS.index(0.95) + 1
    assert ref.trusted(0)
    arms, offloaded = np.asarray(trace.arms), np.asarray(trace.offloaded)
    answered = (arms == 0) & ~offloaded
    assert answered[n // 2 :].mean() > 0.15  # about a quarter of frames, less the audits
    assert (stream.confidences[answered, 0] >= 0.95).all()
    assert trace.correct.all()  # every published label is the final classifier's (right)
    assert trace.costs[n // 2 :].mean() < 0.8 * 0.9  # cheaper than offload-all
    stats = policy.arm_stats()[0]
    assert stats["threshold"] == 0.95 and stats["trusted"] is True
    assert stats["exit_rate"] == pytest.approx(0.25, abs=0.03)  # at 0.95, not at alpha (1.0)
    d = _next_answering(policy)
    assert d.threshold == 0.95 and not d.answers(0.9, RM.alpha) and d.answers(0.96, 0.8)


def _next_answering(policy) -> Decision:
    """The next decision that may answer at exit 0 (audits and other splits cancelled)."""
    for _ in range(100):
        d = policy.decide()
        if not d.audit and d.arm == 0:
            return d
        policy.cancel(d)
    raise AssertionError("exit 0 never chosen to answer")


def test_an_offload_below_a_strict_threshold_is_not_taken_for_a_confident_exit() -> None:
    policy = build_policy("isplitee", RM)
    run_policy(policy, shy_exit_stream(3000, seed=1))
    d = _next_answering(policy)
    assert d.threshold == 0.95
    # 0.9 >= alpha but below the decision's threshold: offloaded, so C_L is known
    policy.observe(d, Observation((0.9,), 0.9, classes=(1,), final_class=1))
    d = _next_answering(policy)
    with pytest.raises(BanditError, match=r"confident \(0.97 >= its threshold 0.95\)"):
        policy.observe(d, Observation((0.97,), 0.9, classes=(1,), final_class=1))
    # an open decision with its threshold survives the state file
    restored = policy_from_state(json.loads(json.dumps(policy.to_state())), RM)
    restored.observe(d.id, Observation((0.9,), 0.9, classes=(1,), final_class=1))


def test_an_old_state_restores_its_counts_as_standing_for_every_level() -> None:
    policy = build_policy("isplitee", RM)
    run_policy(policy, turncoat_stream(900, 600))  # trusted, then refuted at alpha
    state = json.loads(json.dumps(policy.to_state()))
    ref_state = state["extra"]["referee"]
    ref_state["d"] = [row[0] for row in ref_state["d"]]  # the old layout: one count an exit
    del ref_state["alpha"]
    del state["extra"]["confident"]
    restored = policy_from_state(state, RM)
    old = restored.referee
    assert all(row == [row[0]] * Referee.LEVELS for row in old.agreement.d)
    assert [old.level(j) for j in range(old.n_exits)] == [0] * old.n_exits
    # the saved policy moved exit 0 to 0.98, where it never disagreed; restored from the old
    # layout it has no evidence for that and stays at alpha, untrusted
    assert policy.referee.threshold(0, RM.alpha) == 0.98 and policy.referee.trusted(0)
    assert not old.trusted(0)
    bad = json.loads(json.dumps(policy.to_state()))
    bad["extra"]["referee"]["d"][0] = [1.0, 2.0]
    with pytest.raises(BanditError, match=r"referee.d should hold, per exit, 7 finite counts"):
        policy_from_state(bad, RM)


def test_offloads_are_priced_at_the_exit_s_own_threshold() -> None:
    """Behind a dear link (an offload costs 10, the whole network 1.9), exit 0 of the shy
    stream is trusted only at 0.95, where it answers a quarter of frames and offloads the
    rest: answering there costs 0.3 + 0.75 * 10. Priced at alpha (it is confident on every
    frame) it would look like 0.3 a frame; priced right, the whole network wins."""
    dear_link = CostModel(
        name="dear-link", blocks=BLOCKS, edge=RM.cost.edge, offload=(10.0,) * len(BLOCKS)
    )
    rm = RewardModel(dear_link, alpha=0.8)
    policy = build_policy("isplitee", rm)
    trace = run_policy(policy, shy_exit_stream(4000, seed=2))
    assert policy.referee.threshold(0, rm.alpha) == 0.95 and policy.referee.trusted(0)
    assert (np.asarray(trace.arms)[2000:] == len(BLOCKS) - 1).mean() > 0.9
    assert trace.costs[2000:].mean() < dear_link.full_cost * 1.05


def test_renormalising_the_discounted_sums_keeps_the_threshold_counts_in_step() -> None:
    """A discount of 0.5 doubles the stored weight every round, so the stored sums are
    renormalised every few hundred rounds: the counts at stricter thresholds must be scaled
    with the base statistics each time, or the exit rates they give jump."""
    policy = build_policy("isplitee-nonstationary", RM, discount=0.5)
    run_policy(policy, shy_exit_stream(1500, seed=3))  # 2**1500: renormalised several times
    state = policy.to_state()
    confident, n = state["extra"]["confident"], state["stats"]["n"]
    # every sample that computed an exit is counted by both, with the same weight
    assert confident["n"] == pytest.approx(n[:-1])
    assert policy.referee.level(0) > 0  # exit 0 answers at a stricter threshold: its rate
    for _ in range(400):  # is read from those counts; decisions only discount, and one of
        before = policy.arm_stats()  # these 400 renormalises
        policy.cancel(policy.decide())
        after = policy.arm_stats()
        assert [a["exit_rate"] for a in after] == pytest.approx(
            [b["exit_rate"] for b in before], nan_ok=True
        )


def test_a_trusted_exit_keeps_alpha_though_its_rate_fails_the_patience_test() -> None:
    """About 3 disagreements in the referee's memory at alpha: trusted there (upper bound under
    the target), though an exit with that rate would need more audits than patience allows
    to earn trust afresh. It keeps answering at alpha, not at a stricter threshold."""
    ref = Referee(1)
    for i in range(2000):
        ref.record([0.85], [2 if i % 160 == 0 else 1], 1, 0.8)
    rate = ref.agreement.d[0][0] / ref.agreement.n[0]
    assert ref.audits_needed(rate) > ref.patience * ref.clean_audits  # fails patience
    assert ref.trusted(0) and ref.threshold(0, 0.8) == 0.8 and ref.explore_level(0) is None


def test_an_exit_trusted_at_a_strict_threshold_stays_trusted_while_alpha_is_explored() -> None:
    """One early disagreement at 0.85 keeps alpha untrusted for a while; 0.9 (never wrong) is
    trusted once the audits suffice. The exit answers at 0.9, and alpha, still plausible, is
    the level worth auditing for; once alpha is trusted too the exit answers there."""
    ref = Referee(1)
    ref.record([0.85], [2], 1, 0.8)
    levels = []
    for i in range(1, 800):
        ref.record([0.85 if i % 10 < 7 else 0.95], [1], 1, 0.8)
        levels.append((ref.level(0), ref.trusted(0), ref.explore_level(0)))
    assert (1, True, 0) in levels  # trusted at 0.9, exploring alpha
    first = levels.index((1, True, 0))
    assert all(t for _, t, _ in levels[first:])  # never demoted to untrusted
    assert levels[-1] == (0, True, None)  # alpha trusted in the end


def test_the_policy_audits_for_a_lower_threshold_while_that_is_worth_more() -> None:
    """Exit 0 is 0.85 sure of 70 % of frames and 0.95 of the rest, always right but for one
    early frame. Trusted at 0.9 it could answer 30 % of frames now; alpha, once trusted, would
    answer them all, and its optimistic price is higher, so the policy keeps auditing at
    exit 0 (rather than answering at 0.9) until alpha is trusted."""
    n, k = 900, len(BLOCKS)
    rng = np.random.default_rng(4)
    conf = np.full((n, k), 0.3) + rng.uniform(0.0, 0.1, (n, k))
    conf[:, 0] = np.where(np.arange(n) % 10 < 7, 0.85, 0.95)
    conf[:, -1] = 0.9
    labels = rng.integers(0, 10, n)
    classes = np.repeat(labels[:, None], k, axis=1)
    classes[0, 0] = (labels[0] + 1) % 10
    policy = build_policy("isplitee", RM)
    ref = policy.referee
    conf_l, cls_l = conf.tolist(), classes.tolist()
    explored = answered_strict = 0
    for t in range(n):
        exploring = ref.trusted(0) and ref.explore_level(0) == 0 and ref.level(0) > 0
        d = feed(policy, conf_l[t], cls_l[t])
        if exploring and d.arm == 0:
            explored += d.audit
            answered_strict += not d.audit
    assert explored > 10 and answered_strict == 0
    assert ref.level(0) == 0 and ref.trusted(0)


def test_patience_is_capped_by_what_the_memory_can_hold() -> None:
    """With patience 3 a rate needing about 520 audits would count as worth auditing for, but
    the memory holds about 490: alpha could never be trusted, so it is not explored (the exit
    stays trusted at 0.9, where it never disagreed) and nothing is audited for it forever."""
    ref = Referee(1, patience=3.0)
    full = 0.999 / (1 - ref.memory)  # a memory full of audits, 3.8 of them disagreeing at 0.85
    state = ref.to_state()
    state.update(n=[full], d=[[3.8] + [0.0] * (Referee.LEVELS - 1)], alpha=0.8)
    ref = Referee.from_state(1, state)
    needed = ref.audits_needed(3.8 / full)
    assert 1 / (1 - ref.memory) < needed <= ref.patience * ref.clean_audits
    assert ref.trusted(0) and ref.threshold(0, 0.8) == 0.9
    assert ref.explore_level(0) is None


def test_a_state_with_alpha_above_a_stricter_threshold_restores() -> None:
    """alpha 0.95 sits above 0.9: a wrong frame at 0.92 counts at level 1 but not at alpha."""
    rm = RewardModel(paper_cost(BLOCKS), alpha=0.95)
    policy = build_policy("isplitee", rm)
    d = policy.decide()
    assert d.audit and d.arm == 0
    policy.observe(d, Observation((0.92,), 0.9, audit=True, classes=(2,), final_class=1))
    row = policy.referee.agreement.d[0]
    assert row[0] < row[1]
    restored = policy_from_state(json.loads(json.dumps(policy.to_state())), rm)
    assert restored.referee.agreement.d == policy.referee.agreement.d

"""Offline evaluation of split policies on a stream of per-exit confidences.

The stream stands for a camera's frames: each sample has every exit's confidence, predicted
class and whether that prediction is right. A policy sees only what a device would see (the
exits up to its split, and C_L and the final class when it offloads, audits or runs the whole
network); the full table is used only for scoring, for the oracle (best fixed split in
hindsight) and for regret. An audit is a real offload: it is charged the offload and its
frame's answer is the final layer's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from shared.cost import Observation, RewardModel
from shared.policy import SPECS, FixedSplit, Policy, build_policy, find_spec, options_for

__all__ = [
    "PolicyFactory",
    "PolicySummary",
    "Segment",
    "SimulationResult",
    "Stream",
    "Trace",
    "default_policy_names",
    "make_policy_factory",
    "run_policy",
    "settle_times",
    "simulate",
]


@dataclass(frozen=True)
class Segment:
    """A stretch of the stream under one distortion (a schedule has several)."""

    name: str
    start: int
    stop: int


@dataclass(frozen=True)
class Stream:
    confidences: np.ndarray
    """(samples, arms) confidence of each exit, as the device would compute it."""
    correct: np.ndarray
    """(samples, arms) whether each exit's prediction is right."""
    segments: tuple[Segment, ...]
    classes: np.ndarray | None = None
    """(samples, arms) each exit's predicted class. None: a right prediction stands for class
    0 and a wrong one at exit j for class j + 1, so two wrong exits never agree (the
    conservative reading for the referee)."""

    def __post_init__(self) -> None:
        if self.confidences.shape != self.correct.shape or self.confidences.ndim != 2:
            raise ValueError(
                f"confidences {self.confidences.shape} and correct {self.correct.shape} "
                "should both be (samples, arms)"
            )
        if self.classes is not None and self.classes.shape != self.correct.shape:
            raise ValueError(
                f"classes {self.classes.shape} should be (samples, arms) like correct "
                f"{self.correct.shape}"
            )

    def predicted(self) -> np.ndarray:
        """Each exit's class (see ``classes``)."""
        if self.classes is not None:
            return self.classes
        arms = np.arange(1, self.correct.shape[1] + 1)[None, :]
        return np.where(self.correct, 0, arms).astype(np.int64)

    def __len__(self) -> int:
        return len(self.confidences)

    def shuffled(self, rng: np.random.Generator) -> Stream:
        """Reorder samples within each segment; the schedule itself stays in place."""
        order = np.concatenate([s.start + rng.permutation(s.stop - s.start) for s in self.segments])
        classes = None if self.classes is None else self.classes[order]
        return Stream(self.confidences[order], self.correct[order], self.segments, classes)


@dataclass(frozen=True)
class Trace:
    """What one policy did on one pass over a stream, sample by sample."""

    arms: np.ndarray
    rewards: np.ndarray
    costs: np.ndarray
    correct: np.ndarray
    offloaded: np.ndarray
    audited: np.ndarray


def run_policy(policy: Policy, stream: Stream) -> Trace:
    """Feed the stream to ``policy`` one sample at a time, with immediate feedback.

    The policy sees what a device would: the exits up to its split (confidences and classes),
    and C_L and the final class when it offloads, audits or runs the whole network. An audited
    frame, or one below the decision's own threshold, is offloaded and charged as one, its
    answer is the final layer's, and its reward is the paper's offload reward. Rewards are
    scored with the policy's own reward model.
    """
    rewards = policy.rewards
    n = len(stream)
    conf = stream.confidences.tolist()
    full = rewards.reward_matrix(stream.confidences)
    correct = stream.correct
    classes = stream.predicted().tolist()
    last, alpha = rewards.last, rewards.alpha
    cost_exit = rewards.cost.edge
    cost_offload = [e + o for e, o in zip(rewards.cost.edge, rewards.cost.offload, strict=True)]
    arms = np.empty(n, np.int64)
    costs = np.empty(n)
    right = np.empty(n, bool)
    offloaded = np.empty(n, bool)
    audited = np.empty(n, bool)
    # what an audited frame earns: the paper's offload reward at its split
    priced = rewards.mu * (np.asarray(rewards.cost.edge) + np.asarray(rewards.cost.offload))
    offload_reward = stream.confidences[:, last : last + 1] - priced[None, :]
    for t in range(n):
        decision = policy.decide()
        arm = decision.arm
        c, k = conf[t], classes[t]
        audit = decision.audit and arm != last
        offload = arm != last and (audit or not decision.answers(c[arm], alpha))
        known = offload or arm == last
        policy.observe(
            decision,
            Observation(
                tuple(c[: arm + 1]),
                c[last] if known else None,
                audit=audit,
                classes=tuple(k[: arm + 1]),
                final_class=k[last] if known else None,
            ),
        )
        arms[t] = arm
        costs[t] = cost_offload[arm] if offload else cost_exit[arm]
        right[t] = correct[t, last] if known else correct[t, arm]
        offloaded[t] = offload
        audited[t] = audit
    got = full[np.arange(n), arms]
    # an offloaded frame earns the offload reward whatever its exit's confidence: audits, and
    # frames below a stricter threshold than alpha
    got = np.where(offloaded, offload_reward[np.arange(n), arms], got)
    return Trace(arms, got, costs, right, offloaded, audited)


PolicyFactory = Callable[[int], Policy]
"""Builds a fresh policy for run number ``r`` (the seed of random baselines)."""


def default_policy_names(blocks: Sequence[int]) -> list[str]:
    """The simulator's default table: the registry's compared policies, every fixed split of
    ``blocks`` (the last aside: ``final``), and the oracle."""
    names = [entry.spec for entry in SPECS if entry.compared and entry.argument is None]
    for entry in SPECS:
        if entry.argument == "BLOCK":
            names += [f"{entry.name}:{b}" for b in blocks[:-1]]
    return [*names, "oracle"]


def make_policy_factory(
    name: str,
    rewards: RewardModel,
    *,
    c: float | None = None,
    c_nonstationary: float | None = None,
    discount: float | None = None,
    target: float | None = None,
    min_audit_rate: float | None = None,
) -> PolicyFactory | None:
    """A factory for a policy name (a :func:`shared.policy.build_policy` spec, or ``oracle``,
    which returns None: it is built from the table). ``c`` is I-SplitEE's exploration,
    ``c_nonstationary`` and ``discount`` the discounted variants'; ``target`` and
    ``min_audit_rate`` the audited policies' referee; None: the policy's default.
    """
    if name == "oracle":
        return None
    entry, _ = find_spec(name)
    options = options_for(
        name,
        c=c_nonstationary if "discount" in entry.options else c,
        discount=discount,
        target=target,
        min_audit_rate=min_audit_rate,
    )
    build_policy(name, rewards, **options)  # a bad name or setting fails here, not in a run
    return lambda r: build_policy(name, rewards, seed=r, **options)


@dataclass
class PolicySummary:
    accuracy: float
    accuracy_std: float
    cost: float
    cost_reduction: float
    edge_exit_rate: float
    offload_rate: float
    audit_rate: float
    """Share of frames audited (offloaded whatever the exit said; part of offload_rate)."""
    regret: float
    mean_reward: float
    reward_gap: float
    """(oracle's mean reward - this policy's) / |oracle's|: 0 = as good as the best fixed
    split, 0.05 = 5 % short of it. Ill-conditioned when the oracle's mean is near 0."""
    regret_curve: np.ndarray = field(repr=False)
    """Mean cumulative regret after each sample, over runs."""
    segment_accuracy: list[float] = field(repr=False)
    """Accuracy over the first ``window`` samples of each segment (all of a shorter one),
    mean of the runs: how a policy fares right after each change of scene."""
    arms_first_run: np.ndarray = field(repr=False)

    def as_json(self) -> dict[str, float]:
        keys = (
            "accuracy",
            "accuracy_std",
            "cost",
            "cost_reduction",
            "edge_exit_rate",
            "offload_rate",
            "audit_rate",
            "regret",
            "mean_reward",
            "reward_gap",
        )
        return {k: float(getattr(self, k)) for k in keys}


@dataclass
class SimulationResult:
    n_samples: int
    runs: int
    cost_model: str
    oracle_arm: int
    blocks: tuple[int, ...]
    segments: tuple[Segment, ...]
    policies: dict[str, PolicySummary]
    segment_best_arms: list[list[int]]
    """Arms within the settling tolerance of each segment's best, by segment."""
    window: int = 500
    """Samples after each segment's start that ``segment_accuracy`` covers."""


def _summarise(
    ts: Sequence[Trace],
    oracle_curves: Sequence[np.ndarray],
    oracle_mean: float,
    full_cost: float,
    segments: Sequence[Segment],
    window: int,
) -> PolicySummary:
    """One policy's runs (a trace per stream) summarised: means over the runs, regret against
    each run's best fixed split (``oracle_curves``: its cumulative reward)."""
    accs = np.array([t.correct.mean() for t in ts])
    cost = float(np.mean([t.costs.mean() for t in ts]))
    offload = float(np.mean([t.offloaded.mean() for t in ts]))
    audit = float(np.mean([t.audited.mean() for t in ts]))
    mean_reward = float(np.mean([t.rewards.mean() for t in ts]))
    curve = np.mean(
        [oc - np.cumsum(t.rewards) for oc, t in zip(oracle_curves, ts, strict=True)], axis=0
    )
    return PolicySummary(
        accuracy=float(accs.mean()),
        accuracy_std=float(accs.std()),
        cost=cost,
        cost_reduction=1.0 - cost / full_cost,
        edge_exit_rate=1.0 - offload,
        offload_rate=offload,
        audit_rate=audit,
        regret=float(curve[-1]),
        mean_reward=mean_reward,
        reward_gap=(oracle_mean - mean_reward) / abs(oracle_mean) if oracle_mean else math.inf,
        regret_curve=curve,
        segment_accuracy=[
            float(np.mean([t.correct[g.start : min(g.stop, g.start + window)].mean() for t in ts]))
            for g in segments
        ],
        arms_first_run=ts[0].arms,
    )


def _segment_best_arms(
    matrices: Sequence[np.ndarray], segments: Sequence[Segment], tolerance: float
) -> list[list[int]]:
    """Per segment, the arms whose mean reward over the runs is within ``tolerance`` of the
    segment's best."""
    best_arms = []
    for seg in segments:
        seg_means = np.mean([m[seg.start : seg.stop].mean(axis=0) for m in matrices], axis=0)
        best_arms.append([int(a) for a in np.flatnonzero(seg_means >= seg_means.max() - tolerance)])
    return best_arms


def simulate(
    streams: Stream | Sequence[Stream],
    rewards: RewardModel,
    factories: Mapping[str, PolicyFactory | None],
    *,
    settle_tolerance: float = 0.01,
    window: int = 500,
) -> SimulationResult:
    """Run every policy once on each stream (one run per stream) and summarise.

    Give independent draws (the CLI draws a fresh stream per run) for spreads that cover the
    sampling of images, or reshuffles of one stream (:meth:`Stream.shuffled`) for spreads of
    the policies' order effects only. ``window``: samples after each segment's start that
    ``segment_accuracy`` covers. Each run's regret is against the best fixed split in
    hindsight on that run's stream (the ``oracle`` row); ``oracle_arm`` is the best on all
    runs together.
    """
    streams = [streams] if isinstance(streams, Stream) else list(streams)
    if not streams:
        raise ValueError("simulate needs at least one stream")
    if any(s.segments != streams[0].segments for s in streams):
        raise ValueError("every run's stream should have the same segments")
    matrices = [rewards.reward_matrix(s.confidences) for s in streams]
    oracle_arms = [int(np.argmax(m.sum(axis=0))) for m in matrices]
    pooled = np.concatenate(matrices)
    oracle_arm = int(np.argmax(pooled.sum(axis=0)))
    traces: dict[str, list[Trace]] = {name: [] for name in factories}
    oracle_curves = [np.cumsum(m[:, a]) for m, a in zip(matrices, oracle_arms, strict=True)]
    for r, (s, best) in enumerate(zip(streams, oracle_arms, strict=True)):
        for name, factory in factories.items():
            policy = (
                FixedSplit(rewards, arm=best, label="oracle") if factory is None else factory(r)
            )
            traces[name].append(run_policy(policy, s))
    full_cost = rewards.cost.full_cost
    oracle_mean = float(np.mean([c[-1] / len(c) for c in oracle_curves]))
    summaries = {
        name: _summarise(ts, oracle_curves, oracle_mean, full_cost, streams[0].segments, window)
        for name, ts in traces.items()
    }
    best_arms = _segment_best_arms(matrices, streams[0].segments, settle_tolerance)
    return SimulationResult(
        n_samples=len(streams[0]),
        runs=len(streams),
        cost_model=rewards.cost.name,
        oracle_arm=oracle_arm,
        blocks=tuple(rewards.cost.blocks),
        segments=streams[0].segments,
        policies=summaries,
        segment_best_arms=best_arms,
        window=window,
    )


def settle_times(
    arms: np.ndarray,
    segments: Sequence[Segment],
    best_arms: Sequence[Sequence[int]],
    *,
    window: int = 100,
    share: float = 0.8,
) -> list[int | None]:
    """Samples after each segment's start until the policy has settled on that segment's best.

    Settled at s: in the ``window`` decisions from s on, at least ``share`` pick one of the
    segment's best arms (those within the tolerance of the best mean reward). None: never
    within the segment.
    """
    out: list[int | None] = []
    for seg, best in zip(segments, best_arms, strict=True):
        hits = np.isin(arms[seg.start : seg.stop], best).astype(np.float64)
        w = min(window, len(hits))
        sums = np.convolve(hits, np.ones(w), mode="valid")
        ok = np.flatnonzero(sums >= share * w)
        out.append(int(ok[0]) if len(ok) else None)
    return out

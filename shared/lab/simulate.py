"""Offline evaluation of split policies on a stream of per-exit confidences.

The stream stands for a camera's frames: each sample has every exit's confidence and whether
each exit's prediction is right. A policy sees only what a device would see (the exits up to
its split, and C_L when it offloads or runs the whole network); the full table is used only
for scoring, for the oracle (best fixed split in hindsight) and for regret.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from shared.bandit import DiscountedUCB, FixedSplit, ISplitEE, Policy, RandomSplit
from shared.cost import RewardModel

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

    def __post_init__(self) -> None:
        if self.confidences.shape != self.correct.shape or self.confidences.ndim != 2:
            raise ValueError(
                f"confidences {self.confidences.shape} and correct {self.correct.shape} "
                "should both be (samples, arms)"
            )

    def __len__(self) -> int:
        return len(self.confidences)

    def shuffled(self, rng: np.random.Generator) -> Stream:
        """Reorder samples within each segment; the schedule itself stays in place."""
        order = np.concatenate([s.start + rng.permutation(s.stop - s.start) for s in self.segments])
        return Stream(self.confidences[order], self.correct[order], self.segments)


@dataclass(frozen=True)
class Trace:
    """What one policy did on one pass over a stream, sample by sample."""

    arms: np.ndarray
    rewards: np.ndarray
    costs: np.ndarray
    correct: np.ndarray
    offloaded: np.ndarray


def run_policy(policy: Policy, stream: Stream, rewards: RewardModel) -> Trace:
    """Feed the stream to ``policy`` one sample at a time, with immediate feedback."""
    n = len(stream)
    conf = stream.confidences.tolist()
    correct = stream.correct
    last = rewards.last
    arms = np.empty(n, np.int64)
    got = np.empty(n)
    costs = np.empty(n)
    right = np.empty(n, bool)
    offloaded = np.empty(n, bool)
    for t in range(n):
        decision = policy.decide()
        arm = decision.arm
        c = conf[t]
        outcome = rewards.outcome(arm, c[arm])
        final = c[last] if (outcome.offloaded or arm == last) else None
        revealed = rewards.revealed(arm, c[: arm + 1], final)
        policy.update(decision, revealed)
        arms[t] = arm
        got[t] = revealed[arm]
        costs[t] = outcome.cost
        right[t] = correct[t, arm] if outcome.exited_early else correct[t, last]
        offloaded[t] = outcome.offloaded
    return Trace(arms, got, costs, right, offloaded)


PolicyFactory = Callable[[int], Policy]
"""Builds a fresh policy for run number ``r`` (the seed of random baselines)."""


def default_policy_names(blocks: Sequence[int]) -> list[str]:
    return [
        "isplitee",
        "isplitee-nonstationary",
        "final",
        "random",
        *(f"fixed:{b}" for b in blocks[:-1]),
        "oracle",
    ]


def make_policy_factory(
    name: str,
    blocks: Sequence[int],
    *,
    c: float = ISplitEE.DEFAULT_C,
    c_nonstationary: float = DiscountedUCB.DEFAULT_C,
    discount: float = DiscountedUCB.DEFAULT_DISCOUNT,
) -> PolicyFactory | None:
    """A factory for a policy name; ``oracle`` returns None (it is built from the table)."""
    k = len(blocks)
    if name == "isplitee":
        return lambda r: ISplitEE(k, c=c)
    if name == "isplitee-nonstationary":
        return lambda r: DiscountedUCB(k, c=c_nonstationary, discount=discount)
    if name == "final":
        return lambda r: FixedSplit(k, arm=k - 1, label="final")
    if name == "random":
        return lambda r: RandomSplit(k, seed=r)
    if name == "oracle":
        return None
    if name.startswith("fixed:"):
        try:
            arm = list(blocks).index(int(name.partition(":")[2]))
        except ValueError:
            raise ValueError(
                f"{name!r}: fixed needs one of the model's blocks {list(blocks)}"
            ) from None
        return lambda r: FixedSplit(k, arm=arm, label=name)
    raise ValueError(
        f"unknown policy {name!r}: use isplitee, isplitee-nonstationary, final, random, oracle "
        "or fixed:BLOCK"
    )


@dataclass
class PolicySummary:
    accuracy: float
    accuracy_std: float
    cost: float
    cost_reduction: float
    edge_exit_rate: float
    offload_rate: float
    regret: float
    mean_reward: float
    reward_gap: float
    """(oracle's mean reward - this policy's) / |oracle's|: 0 = as good as the best fixed
    split, 0.05 = 5 % short of it. Ill-conditioned when the oracle's mean is near 0."""
    regret_curve: np.ndarray = field(repr=False)
    """Mean cumulative regret after each sample, over runs."""
    arms_first_run: np.ndarray = field(repr=False)

    def as_json(self) -> dict[str, float]:
        keys = (
            "accuracy",
            "accuracy_std",
            "cost",
            "cost_reduction",
            "edge_exit_rate",
            "offload_rate",
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


def simulate(
    stream: Stream,
    rewards: RewardModel,
    factories: dict[str, PolicyFactory | None],
    *,
    runs: int = 1,
    seed: int = 0,
    settle_tolerance: float = 0.01,
) -> SimulationResult:
    """Run every policy ``runs`` times on reshuffled copies of the stream and summarise."""
    if runs < 1:
        raise ValueError(f"runs should be at least 1, got {runs!r}")
    rng = np.random.default_rng(seed)
    streams = [stream] + [stream.shuffled(rng) for _ in range(runs - 1)]
    matrices = [rewards.reward_matrix(s.confidences) for s in streams]
    full = matrices[0]
    oracle_arm = int(np.argmax(full.sum(axis=0)))
    k = rewards.n_arms
    traces: dict[str, list[Trace]] = {name: [] for name in factories}
    oracle_curves = [np.cumsum(m[:, oracle_arm]) for m in matrices]
    for r, s in enumerate(streams):
        for name, factory in factories.items():
            policy = (
                FixedSplit(k, arm=oracle_arm, label="oracle") if factory is None else factory(r)
            )
            traces[name].append(run_policy(policy, s, rewards))
    full_cost = rewards.cost.full_cost
    oracle_mean = float(full[:, oracle_arm].mean())
    summaries = {}
    for name, ts in traces.items():
        accs = np.array([t.correct.mean() for t in ts])
        cost = float(np.mean([t.costs.mean() for t in ts]))
        offload = float(np.mean([t.offloaded.mean() for t in ts]))
        mean_reward = float(np.mean([t.rewards.mean() for t in ts]))
        curve = np.mean(
            [oc - np.cumsum(t.rewards) for oc, t in zip(oracle_curves, ts, strict=True)], axis=0
        )
        summaries[name] = PolicySummary(
            accuracy=float(accs.mean()),
            accuracy_std=float(accs.std()),
            cost=cost,
            cost_reduction=1.0 - cost / full_cost,
            edge_exit_rate=1.0 - offload,
            offload_rate=offload,
            regret=float(curve[-1]),
            mean_reward=mean_reward,
            reward_gap=(oracle_mean - mean_reward) / abs(oracle_mean) if oracle_mean else math.inf,
            regret_curve=curve,
            arms_first_run=ts[0].arms,
        )
    best_arms = []
    for seg in stream.segments:
        seg_means = full[seg.start : seg.stop].mean(axis=0)
        best_arms.append(
            [int(a) for a in np.flatnonzero(seg_means >= seg_means.max() - settle_tolerance)]
        )
    return SimulationResult(
        n_samples=len(stream),
        runs=runs,
        cost_model=rewards.cost.name,
        oracle_arm=oracle_arm,
        blocks=tuple(rewards.cost.blocks),
        segments=stream.segments,
        policies=summaries,
        segment_best_arms=best_arms,
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

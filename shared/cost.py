"""What a split costs, what one sample reveals, and the reward rule. Pure logic, no I/O.

Per sample with split arm i (block l_i, L = 19), following the paper:

=====================  ===============================  =======================================
case                   cost                             reward
=====================  ===============================  =======================================
C_i >= alpha, i < last edge(i)                          C_i - mu * edge(i)
C_i <  alpha, i < last edge(i) + offload(i)             C_L - mu * (edge(i) + offload(i))
i = last               edge(last)                       C_L - mu * edge(last)
=====================  ===============================  =======================================

The paper's cost model charges ``edge(i) = gamma * l_i`` and a flat ``offload(i) = o``. The
measured model charges the device's work to reach arm i (the backbone and every exit head on
the way, since side observations need them all) and each offload the time its payload takes
on the link, both in the paper's units (the whole network on the device costs ``gamma * L`` in
both) so mu keeps its meaning. Cloud compute is not charged, as in the paper.

A policy does not learn rewards: it learns from :class:`Observation` (what one sample showed)
and prices those observations with the :class:`RewardModel` in force when it decides, so a
node whose costs change keeps what it learnt about its images (see :mod:`shared.policy`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from shared.protocol import HEADER_BYTES, NUM_BLOCKS

if TYPE_CHECKING:  # only for the signature: this module stays free of torch
    from shared.profile import ModelProfile

__all__ = [
    "CostModel",
    "Observation",
    "Outcome",
    "RewardModel",
    "measured_cost",
    "paper_cost",
]

PAPER_GAMMA = 0.1
PAPER_OFFLOAD = 0.5
PAPER_MU = 1.0
PAPER_ALPHA = 0.5
RECOMMENDED_ALPHA = 0.8
"""The exit threshold ``isplitee simulate`` uses by default (docs/results.md compares it with
the paper's 0.5): with the audited policy a higher threshold lets more exits earn trust."""


# Defaults of the measured model (see measured_cost for where they come from).
DEFAULT_EDGE_GMACS = 2.0
DEFAULT_LINK_MBIT = 10.0
DEFAULT_RTT_MS = 20.0
DEFAULT_ENCODING = "fp16"


@dataclass(frozen=True)
class CostModel:
    """Cost of each arm on the device and of offloading from it, in the paper's units."""

    name: str
    blocks: tuple[int, ...]
    edge: tuple[float, ...]
    """Device cost to reach arm i (its exit included)."""
    offload: tuple[float, ...]
    """Extra cost to send arm i's activation to the cloud; unused for the last arm."""

    def __post_init__(self) -> None:
        n = len(self.blocks)
        if not (len(self.edge) == len(self.offload) == n) or n < 1:
            raise ValueError(
                f"cost model {self.name!r}: blocks, edge and offload should have one value per "
                f"arm, got {len(self.blocks)}, {len(self.edge)}, {len(self.offload)}"
            )
        if not all(0 <= c < math.inf for c in (*self.edge, *self.offload)):
            raise ValueError(
                f"cost model {self.name!r}: costs should be finite and >= 0, got edge "
                f"{self.edge}, offload {self.offload}"
            )

    @property
    def full_cost(self) -> float:
        """Cost of answering every sample with the whole network on the device."""
        return self.edge[-1]


def paper_cost(
    blocks: Sequence[int], *, gamma: float = PAPER_GAMMA, offload: float = PAPER_OFFLOAD
) -> CostModel:
    """gamma per block on the device, a flat ``offload`` per offloaded sample."""
    blocks = tuple(blocks)
    if blocks[-1] != NUM_BLOCKS:
        raise ValueError(f"the last arm should be block {NUM_BLOCKS}, got {blocks[-1]}")
    return CostModel(
        name="paper",
        blocks=blocks,
        edge=tuple(gamma * b for b in blocks),
        offload=tuple(float(offload) for _ in blocks),
    )


def measured_cost(
    profile: ModelProfile,
    blocks: Sequence[int],
    *,
    edge_gmacs_per_s: float = DEFAULT_EDGE_GMACS,
    link_mbit_per_s: float = DEFAULT_LINK_MBIT,
    rtt_ms: float = DEFAULT_RTT_MS,
    encoding: str | Mapping[int, str] = DEFAULT_ENCODING,
    header_bytes: int = HEADER_BYTES,
    gamma: float = PAPER_GAMMA,
    edge_seconds: Mapping[int, float] | None = None,
) -> CostModel:
    """Latency-based costs from the model's FLOPs and payload sizes.

    Edge time of arm i = MACs the device spends on that split (backbone up to block l_i and
    every exit head on the way: the device computes them all, they are the side observations)
    / device throughput; offload time = (activation
    bytes in ``encoding``, one for all splits or one per split block, + the message's
    :data:`~shared.protocol.HEADER_BYTES`) * 8 /
    link rate + one round trip. Both are divided by
    the device time of the whole network and multiplied by ``gamma * 19``, so the last arm costs
    the same as in the paper model and mu means the same in both.

    ``edge_seconds`` (block -> seconds, e.g. from :func:`shared.profile.measure_exit_latency` run
    on the device) replaces the MAC-based edge time when given.

    Defaults: 2 GMAC/s is about what a Raspberry Pi 4 gets from PyTorch on MobileNetV2 (some 150
    ms at 224 px); 10 Mbit/s and 20 ms are a modest Wi-Fi uplink. Set them for your site.
    """
    blocks = tuple(blocks)
    rates = {"edge_gmacs_per_s": edge_gmacs_per_s, "link_mbit_per_s": link_mbit_per_s}
    for name, value in rates.items():
        if not value > 0:
            raise ValueError(f"{name} should be positive, got {value!r}")
    if rtt_ms < 0:
        raise ValueError(f"rtt_ms should be >= 0, got {rtt_ms!r}")
    if edge_seconds is not None:
        missing = [b for b in blocks if b not in edge_seconds]
        if missing or any(edge_seconds[b] <= 0 for b in blocks):
            raise ValueError(
                f"edge_seconds should give a positive time for every arm {blocks}, "
                f"missing {missing}"
            )
        edge_s = [float(edge_seconds[b]) for b in blocks]
    else:
        edge_s = [profile.macs_to_split(b) / (edge_gmacs_per_s * 1e9) for b in blocks]
    per_block = (
        dict.fromkeys(blocks, encoding)
        if isinstance(encoding, str)
        else {b: encoding.get(b, DEFAULT_ENCODING) for b in blocks}  # the last arm sends nothing
    )
    send_s = [
        (profile.block(b).payload_bytes(per_block[b]) + header_bytes) * 8 / (link_mbit_per_s * 1e6)
        + rtt_ms / 1e3
        for b in blocks
    ]
    unit = gamma * NUM_BLOCKS / edge_s[-1]
    return CostModel(
        name="measured" if edge_seconds is None else "measured-timed",
        blocks=blocks,
        edge=tuple(t * unit for t in edge_s),
        offload=tuple(t * unit for t in send_s),
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one sample at its split."""

    offloaded: bool
    exited_early: bool
    cost: float


@dataclass(frozen=True, slots=True)
class Observation:
    """What one sample revealed, whatever the costs: a policy learns from this, not from rewards.

    ``confidences`` are exits 0..arm as computed on the device (temperature-scaled max softmax),
    the chosen arm's last; after an audit whose reply carried the exits beyond the split (the
    cloud computes them on its way to C_L), every exit of the network, C_L last.
    ``final_confidence`` is C_L when it is known: the arm is the last
    one (then it equals ``confidences[-1]``), or the cloud answered an offload or an audit.
    ``audit``: the frame was offloaded whatever its exit's confidence (a referee sample), so C_L
    was revealed independently of how the exits came out. ``classes``: the predicted class of
    each computed exit, in the order of ``confidences``; ``final_class``: the final
    classifier's class when C_L is known (the cloud's label, or the last exit's when the arm is
    the last). The referee (:mod:`shared.policy.referee`) learns agreement from them; None: not
    given (the confidence statistics are still learnt).
    """

    confidences: tuple[float, ...]
    final_confidence: float | None
    audit: bool = False
    classes: tuple[int, ...] | None = None
    final_class: int | None = None


@dataclass(frozen=True)
class RewardModel:
    """The decision rule and reward of the paper for a given cost model."""

    cost: CostModel
    alpha: float = PAPER_ALPHA
    mu: float = PAPER_MU

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha should be in [0, 1], got {self.alpha!r}")
        if not self.mu >= 0:
            raise ValueError(f"mu should be >= 0, got {self.mu!r}")

    @property
    def n_arms(self) -> int:
        return len(self.cost.blocks)

    @property
    def last(self) -> int:
        return self.n_arms - 1

    def offload_cost(self, arm: int) -> float:
        """What an offload from ``arm`` costs; the last arm never offloads."""
        return 0.0 if arm == self.last else self.cost.offload[arm]

    def arm_bounds(self, arm: int) -> tuple[float, float]:
        """Lowest and highest reward ``arm`` can earn, confidences anywhere in [0, 1].

        Highest: exit (or final layer) with confidence 1. Lowest: offload with C_L = 0, or for
        the last arm C_L = 0; with alpha = 0 nothing offloads and an exit earns at least 0.
        """
        edge = self.mu * self.cost.edge[arm]
        if arm == self.last:
            return -edge, 1.0 - edge
        if self.alpha > 0:
            return -edge - self.mu * self.cost.offload[arm], 1.0 - edge
        return -edge, 1.0 - edge

    @property
    def reward_bounds(self) -> tuple[float, float]:
        """The span of possible rewards over all arms under this cost model."""
        bounds = [self.arm_bounds(a) for a in range(self.n_arms)]
        return min(lo for lo, _ in bounds), max(hi for _, hi in bounds)

    @property
    def reward_range(self) -> float:
        """Highest minus lowest possible reward: the scale exploration is measured in."""
        lo, hi = self.reward_bounds
        return hi - lo

    def outcome(self, arm: int, confidence: float) -> Outcome:
        """Exit or offload at ``arm`` given its exit's confidence."""
        if arm == self.last:
            return Outcome(False, False, self.cost.edge[arm])
        if confidence >= self.alpha:
            return Outcome(False, True, self.cost.edge[arm])
        return Outcome(True, False, self.cost.edge[arm] + self.cost.offload[arm])

    def reward_matrix(self, confidences: np.ndarray) -> np.ndarray:
        """Full-information rewards (samples, arms) from every exit's confidence.

        Offline only (every exit and C_L known): the oracle, the regret and the true means the
        tests compare a policy's estimates with.
        """
        conf = np.asarray(confidences, dtype=np.float64)
        if conf.ndim != 2 or conf.shape[1] != self.n_arms:
            raise ValueError(f"confidences should be (samples, {self.n_arms}), got {conf.shape}")
        edge = np.asarray(self.cost.edge)
        off = np.asarray(self.cost.offload)
        final = conf[:, -1:]
        exit_reward = conf - self.mu * edge
        offload_reward = final - self.mu * (edge + off)
        rewards = np.where(conf >= self.alpha, exit_reward, offload_reward)
        rewards[:, -1] = final[:, 0] - self.mu * edge[-1]
        return rewards

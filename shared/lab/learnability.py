"""How much of a policy's gap to the oracle a stream of a given length leaves to learning.

The results page compares each policy's mean reward with the *oracle*: the best fixed split in
hindsight on the same stream. Two parts of that gap are no policy's fault, and both can be
computed from a full-information reward table (every split's reward on every sample):

- **Hindsight.** On a stream of ``horizon`` i.i.d. samples, the split that happened to do best
  beats the split that is best on average by ``E[max_i mean_i] - max_i mu_i``. No policy that
  picks its split before seeing the sample can expect more than ``max_i mu_i`` per sample, so
  this part of the gap binds every policy, learning or not.
- **Telling the best two apart.** Even a learner that saw every split's reward on every past
  sample ranks the best split ``a`` below the runner-up ``b`` after ``n`` samples with
  probability about ``Phi(-delta sqrt(n) / sd)`` (``delta``, ``sd``: the mean and standard
  deviation of the per-sample difference ``r_a - r_b``; paired, as full information sees
  them). ``(2 sd / delta)^2`` samples bring that below 2.3 %: where that is far beyond the
  horizon and the runner-up costs more than the tolerated gap, a learner that follows the data
  cannot be expected to meet the tolerance; only one that knows the answer beforehand can.

The audited policy pays a third part by design: before an exit may answer, the referee needs
``audits_to_trust`` audits, and afterwards it audits at least ``min_rate`` of the decisions.
An audit is chosen without looking at the frame, so each earns the audit's mean reward at most,
and no other decision earns more than the best split's mean: :func:`audit_floor` is that
price, the least gap the referee's guarantee costs.

Pure numpy, no I/O: the page generator feeds it the reward matrices of
:meth:`shared.cost.RewardModel.reward_matrix`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Separability", "audit_floor", "separability"]


@dataclass(frozen=True)
class Separability:
    """The two parts of the oracle gap no policy controls, on one population of samples.

    Gaps are relative to ``|oracle|``, the expected reward of the best fixed split in
    hindsight over ``horizon`` samples, as the results page's ``gap to oracle`` is.
    """

    best: int
    runner_up: int
    oracle: float
    """E[max_i mean_i] over streams of ``horizon`` samples."""
    runner_up_gap: float
    """What playing the runner-up throughout costs against the oracle, beyond ``hindsight``."""
    sd: float
    """Standard deviation of the per-sample reward difference best - runner-up."""
    samples_to_rank: float
    """``(2 sd / delta)^2``: samples after which full information ranks the two at 2 s.e."""
    wrong_at_horizon: float
    """Chance that full information after ``horizon`` samples ranks the runner-up first."""
    hindsight: float
    """(E[max_i mean_i] - max_i mu_i) / |oracle|: binds every policy."""


def separability(
    rewards: np.ndarray, horizon: int, *, resamples: int = 1000, seed: int = 0
) -> Separability:
    """The figures of the module docstring for a population of samples.

    ``rewards`` (samples, arms): every split's reward on every sample of the population (the
    whole test set for a deterministic distortion, a large draw for a random one); streams of
    ``horizon`` samples are drawn from it with replacement, as the evaluator draws them.
    """
    m = np.asarray(rewards, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] < 2 or m.shape[1] < 2:
        raise ValueError(f"rewards should be (samples >= 2, arms >= 2), got {m.shape}")
    if not (isinstance(horizon, int) and horizon >= 1):
        raise ValueError(f"horizon should be an integer >= 1, got {horizon!r}")
    if not (isinstance(resamples, int) and resamples >= 1):
        raise ValueError(f"resamples should be an integer >= 1, got {resamples!r}")
    mu = m.mean(axis=0)
    order = np.argsort(-mu, kind="stable")
    a, b = int(order[0]), int(order[1])
    rng = np.random.default_rng(seed)
    # max_i mean_i - mean_a on the same stream: the same expectation as E[max_i mean_i] - mu_a
    # (E[mean_a] = mu_a) with far less resampling noise, and never negative
    excess = np.empty(resamples)
    for k in range(resamples):
        means = m[rng.integers(0, len(m), horizon)].mean(axis=0)
        excess[k] = means.max() - means[a]
    oracle = float(mu[a] + excess.mean())
    scale = abs(oracle) if oracle != 0.0 else 1.0
    diff = m[:, a] - m[:, b]
    delta, sd = float(diff.mean()), float(diff.std())
    if sd == 0.0:
        to_rank, wrong = (0.0, 0.0) if delta > 0.0 else (math.inf, 0.5)
    elif delta <= 1e-12 * sd:  # a tie: the data can never rank them
        to_rank, wrong = math.inf, 0.5
    else:
        to_rank = (2.0 * sd / delta) ** 2
        wrong = 0.5 * math.erfc(delta * math.sqrt(horizon) / sd / math.sqrt(2.0))
    return Separability(
        best=a,
        runner_up=b,
        oracle=oracle,
        runner_up_gap=delta / scale,
        sd=sd,
        samples_to_rank=to_rank,
        wrong_at_horizon=wrong,
        hindsight=float(excess.mean()) / scale,
    )


def audit_floor(
    best: float,
    audit: float,
    oracle: float,
    horizon: int,
    *,
    audits_to_trust: int,
    min_rate: float,
) -> float:
    """The least gap to ``oracle`` (relative to ``|oracle|``) of a policy that must audit
    ``audits_to_trust`` decisions before an early exit answers and ``min_rate`` of the rest.

    ``best``: the best split's mean reward; ``audit``: the best mean reward an audit can earn
    (the cheaper of an offload at a split and the whole network on the device). When the
    whole network is itself the best split, no exit needs trust: pass ``audit = best``.
    """
    if not (isinstance(horizon, int) and horizon >= 1):
        raise ValueError(f"horizon should be an integer >= 1, got {horizon!r}")
    if audits_to_trust < 0 or not 0.0 <= min_rate <= 1.0:
        raise ValueError(
            f"audits_to_trust should be >= 0 and min_rate in [0, 1], got "
            f"{audits_to_trust!r}, {min_rate!r}"
        )
    first = min(audits_to_trust, horizon)
    audits = first + min_rate * (horizon - first)
    mean = best - audits / horizon * max(best - audit, 0.0)
    return (oracle - mean) / (abs(oracle) if oracle != 0.0 else 1.0)

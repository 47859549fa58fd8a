"""Wilson score bounds of a disagreement rate, and the audits they need to reach a target:
what the referee trusts an exit on (docs/bandit.md, "What the referee guarantees")."""

from __future__ import annotations

import math

__all__ = [
    "audits_to_trust",
    "disagreements_to_distrust",
    "wilson_audits_needed",
    "wilson_bounds",
]


def wilson_bounds(d: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a rate d/n at z standard errors (0, 1 when n = 0)."""
    if n <= 0.0:
        return 0.0, 1.0
    p = min(max(d / n, 0.0), 1.0)
    z2 = z * z
    centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n)
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / (1.0 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_audits_needed(rate: float, target: float, z: float) -> float:
    """Smallest n with the Wilson upper bound of ``rate`` over n audits <= ``target``
    (inf when ``rate >= target``): the larger root of the quadratic the bound's inequality
    becomes once squared, on the side where its unsquared form holds."""
    if rate >= target:
        return math.inf
    p, t, z2 = max(rate, 0.0), target, z * z
    a_ = t - p
    b_ = z2 * (t - 0.5)
    qa = a_ * a_
    qb = 2.0 * a_ * b_ - z2 * p * (1.0 - p)
    qc = b_ * b_ - z2 * z2 / 4.0
    root = (-qb + math.sqrt(max(qb * qb - 4.0 * qa * qc, 0.0))) / (2.0 * qa)
    return max(root, -b_ / a_, 0.0)


def audits_to_trust(target: float, z: float, memory: float) -> int:
    """Agreeing audits in a row, each older one discounted by ``memory``, after which the
    Wilson upper bound of the disagreement rate is within ``target``."""
    n, k = 0.0, 0
    while not (n > 0.0 and wilson_bounds(0.0, n, z)[1] <= target):
        n, k = n * memory + 1.0, k + 1
    return k


def disagreements_to_distrust(
    target: float, z: float, memory: float, agreeing: float | None = None
) -> int:
    """Disagreeing audits in a row after which an exit backed by ``agreeing`` discounted
    agreeing audits (default: the most the memory holds, ``1 / (1 - memory)``) has its upper
    bound above ``target``."""
    if agreeing is None:
        agreeing = math.inf if memory >= 1.0 else 1.0 / (1.0 - memory)
    n, d = float(agreeing), 0.0
    if math.isinf(n):
        raise ValueError("memory 1 keeps every audit: no finite bound")
    for k in range(1, 100_000):
        n = n * memory + 1.0
        d = d * memory + 1.0
        if wilson_bounds(d, n, z)[1] > target:
            return k
    raise ValueError("no bound within 100000 audits")  # pragma: no cover

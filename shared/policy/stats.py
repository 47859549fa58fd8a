"""Per-arm statistics of what samples revealed, their discounting, and the estimates they give.

What is learnt is what was observed, never a reward: per arm, how often its exit is confident,
its confidence when it is, and C_L when it is not. Which sample feeds which sum is what keeps
the estimates consistent whatever arms a policy plays; docs/bandit.md ("The estimate, and why
it is consistent") derives it. Each estimate is priced with the reward model in force when it
is asked for, so new costs change the next decision without forgetting anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from shared.cost import RewardModel
from shared.policy.checks import check_counts

__all__ = ["KEYS", "ArmStats", "Terms", "check_stats"]

KEYS = ("n", "e", "s", "s2", "m", "f", "f2")
"""The seven sums kept per arm, in the order a saved state lists them."""

Terms = tuple[float, float, float, float, float, float, float, float, float, float, float]
"""``(q, e_mean, g, edge, off, aq, bq, ae, be, ag, bg)``: see :meth:`ArmStats.terms`."""


class ArmStats:
    """The sums per arm j, each weighted by the discount (1 when none).

    ``n`` samples that computed exit j, ``e`` of them with C_j >= alpha, ``s``/``s2`` the sum
    of C_j / C_j**2 over those, ``m`` samples with C_j < alpha whose C_L was revealed
    independently of the deeper exits, ``f``/``f2`` the sum of C_L / C_L**2 over those. For the
    last arm ``n = m`` counts the samples whose C_L was revealed independently of every exit.

    Discounting without touching every sum each round: stored values are the true ones times
    ``w``, and a new observation is added with weight ``w``. Sums kept elsewhere in the same
    units (:meth:`track`) are renormalised and reset with these.
    """

    def __init__(self, n_arms: int) -> None:
        k = self.n_arms = n_arms
        self.n, self.e, self.s, self.s2 = [0.0] * k, [0.0] * k, [0.0] * k, [0.0] * k
        self.m, self.f, self.f2 = [0.0] * k, [0.0] * k, [0.0] * k
        self.w = 1.0
        self._tracked: list[list[float]] = []
        self._cache: list[Terms | None] = [None] * k
        self._fresh = [False] * k

    def sums(self) -> tuple[list[float], ...]:
        """The seven lists, in the order of :data:`KEYS` (stored units)."""
        return self.n, self.e, self.s, self.s2, self.m, self.f, self.f2

    def track(self, *sums: list[float]) -> None:
        """Lists kept by a policy in these stored units: renormalised and reset in place with
        the statistics (the audited policy's counts at stricter thresholds)."""
        self._tracked.extend(sums)

    def stale(self) -> None:
        """Forget the cached terms: the prices changed."""
        self._fresh = [False] * self.n_arms

    def discount(self, factor: float) -> None:
        """One round of discounting: every past observation weighs ``factor`` times less."""
        self.w /= factor
        if self.w > 1e100:  # renormalise before the stored sums overflow
            for stored in (*self.sums(), *self._tracked):
                stored[:] = [v / self.w for v in stored]
            self.w = 1.0
            self.stale()

    def reset(self) -> None:
        """Forget everything observed (the scene changed); the weight stays."""
        for stored in (*self.sums(), *self._tracked):
            stored[:] = [0.0] * len(stored)
        self.stale()

    def learn(
        self,
        arm: int,
        conf: Sequence[float],
        final: float | None,
        *,
        independent: bool,
        alpha: float,
    ) -> None:
        """One sample that chose ``arm``: its exits' confidences (0..arm) and C_L when it was
        revealed, ``independent`` of the deeper exits when the arm is the last or an audit."""
        last = self.n_arms - 1
        w = self.w
        n, e, s, s2, m, f, f2 = self.sums()
        fresh = self._fresh
        for j in range(arm if arm < last else last):
            x = conf[j]
            n[j] += w
            if x >= alpha:
                e[j] += w
                s[j] += w * x
                s2[j] += w * x * x
            elif final is not None and independent:
                m[j] += w
                f[j] += w * final
                f2[j] += w * final * final
            fresh[j] = False
        if arm < last:  # the chosen arm: its own offload reveals C_L given C_j < alpha
            x = conf[arm]
            n[arm] += w
            if x >= alpha:
                e[arm] += w
                s[arm] += w * x
                s2[arm] += w * x * x
            elif final is not None:
                m[arm] += w
                f[arm] += w * final
                f2[arm] += w * final * final
            fresh[arm] = False
        if final is not None and independent:
            n[last] += w
            m[last] += w
            f[last] += w * final
            f2[last] += w * final * final
            fresh[last] = False

    # -- estimates --------------------------------------------------------------------------------
    def terms(self, j: int, rm: RewardModel) -> Terms | None:
        """What arm j's index needs, from the statistics and the costs of ``rm``.

        ``(q, e_mean, g, edge, off, aq, bq, ae, be, ag, bg)``: offload share, mean confidence
        when exiting, mean C_L when unsure (-1: no sample yet), the priced edge and offload
        costs, and for each of the three observed means the coefficients of its bonus (in
        stored units). None: never observed. Cached until arm j learns or prices change.
        """
        if self._fresh[j]:
            return self._cache[j]
        self._fresh[j] = True
        n = self.n[j]
        if n <= 0.0:
            self._cache[j] = None
            return None
        edge = rm.mu * rm.cost.edge[j]
        m = self.m[j]
        if m > 0.0:
            g = self.f[j] / m
            ag, bg = math.sqrt(2.0 * max(self.f2[j] / m - g * g, 0.0) / m), 3.0 / m
        else:
            g, ag, bg = -1.0, 0.0, 0.0
        terms: Terms
        if j == rm.last:
            terms = (1.0, 0.0, g, edge, 0.0, 0.0, 0.0, 0.0, 0.0, ag, bg)
        else:
            e = self.e[j]
            q = (n - e) / n
            aq, bq = math.sqrt(2.0 * q * (1.0 - q) / n), 3.0 / n
            if e > 0.0:
                e_mean = self.s[j] / e
                ae = math.sqrt(2.0 * max(self.s2[j] / e - e_mean * e_mean, 0.0) / e)
                be = 3.0 / e
            else:
                e_mean, ae, be = -1.0, 0.0, 0.0
            off = rm.mu * rm.cost.offload[j]
            terms = (q, e_mean, g, edge, off, aq, bq, ae, be, ag, bg)
        self._cache[j] = terms
        return terms

    def posterior_mean(self, j: int, edge: float, off: float) -> float:
        """Arm j's reward with each observed mean replaced by its posterior mean under a
        uniform prior (one pseudo-sample at 1/2, two for the offload share): a split seen on
        a single confident sample must not look as if it never offloads."""
        w = self.w
        g = (self.f[j] + 0.5 * w) / (self.m[j] + w)
        if j == self.n_arms - 1:
            return g - edge
        n, e = self.n[j], self.e[j]
        q = (n - e + w) / (n + 2.0 * w)
        e_mean = (self.s[j] + 0.5 * w) / (e + w)
        return (1.0 - q) * e_mean + q * (g - off) - edge

    def estimates(self, rm: RewardModel) -> list[float | None]:
        """Estimated mean reward of each arm under ``rm`` (None: not enough seen)."""
        out: list[float | None] = []
        for j in range(self.n_arms):
            t = self.terms(j, rm)
            if t is None:
                out.append(None)
                continue
            q, e_mean, g, edge, off = t[:5]
            if (q > 0.0 and g < 0.0) or (q < 1.0 and e_mean < 0.0):
                out.append(None)
            else:
                exit_part = (1.0 - q) * e_mean if q < 1.0 else 0.0
                out.append(exit_part + (q * (g - off) if q > 0.0 else 0.0) - edge)
        return out

    # -- persistence ------------------------------------------------------------------------------
    def to_state(self) -> dict[str, list[float]]:
        """The true (discounted) values, as a saved state lists them."""
        w = self.w
        return {key: [v / w for v in stored] for key, stored in zip(KEYS, self.sums(), strict=True)}

    def load(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state` on fresh statistics; a bad one raises ValueError."""
        values = check_stats(state, self.n_arms)
        for key, stored in zip(KEYS, self.sums(), strict=True):
            stored[:] = [v * self.w for v in values[key]]
        self.stale()


def check_stats(state: Any, n_arms: int) -> dict[str, list[float]]:
    """A saved state's ``stats``: the seven sums, ``n_arms`` counts each, no more exits or
    censored samples than samples; else a ValueError naming the fault."""
    out = {key: check_counts(f"stats.{key}", state[key], n_arms) for key in KEYS}
    for j in range(n_arms):
        n, e, m = out["n"][j], out["e"][j], out["m"][j]
        if e > n * (1 + 1e-9) or m > n * (1 + 1e-9):
            raise ValueError(f"stats of arm {j} are inconsistent: n {n}, e {e}, m {m}")
    return out

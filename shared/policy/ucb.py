"""The paper's rule: I-SplitEE (UCB with side observations) and its discounted variant.

Each decision finds the arm with the highest upper confidence bound and plays it, or the
cheapest arm that teaches the same statistics (side observations make deeper arms informative
too). docs/bandit.md ("Exploration") derives the intervals and the choice.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, ClassVar

from shared.cost import RewardModel
from shared.policy.base import Policy

__all__ = ["DiscountedUCB", "ISplitEE", "check_discount", "check_total"]


def check_discount(discount: object) -> float:
    """A discount factor in (0, 1); else a ValueError naming it."""
    if not (isinstance(discount, numbers.Real) and 0.0 < discount < 1.0):
        raise ValueError(f"discount should be in (0, 1), got {discount!r}")
    return float(discount)


def check_total(total: object) -> float:
    """A saved discounted number of rounds."""
    if not (isinstance(total, numbers.Real) and 0 <= total < math.inf):
        raise ValueError(f"total should be a finite number >= 0, got {total!r}")
    return float(total)


class ISplitEE(Policy):
    """I-SplitEE: UCB over the splits with side observations, on consistent estimates.

    Every sample updates every exit it computed; each decision finds the arm with the highest
    upper confidence bound with horizon t = the number of decisions, and plays it or the
    cheapest arm that reveals the same statistics. ``c`` scales the intervals (empirical
    Bernstein), which enter the index priced like the reward; ``c = 0`` exploits the
    estimates, except that a split seen on few samples is judged by its posterior mean.
    """

    name = "isplitee-paper"
    DEFAULT_C: ClassVar[float] = 0.25
    """Recommended exploration (docs/results.md sweeps it under both cost models)."""

    def __init__(self, rewards: RewardModel, *, c: float | None = None) -> None:
        super().__init__(rewards)
        c = self.DEFAULT_C if c is None else c
        if not (isinstance(c, numbers.Real) and 0 <= c < math.inf):
            raise ValueError(f"exploration c should be a finite number >= 0, got {c!r}")
        self.c = float(c)

    @property
    def spec(self) -> str:
        return self.name

    def _choose(self) -> int:
        return self._index(self.c, math.log(self._horizon()))

    def _horizon(self) -> float:
        return max(self.rounds, 1)

    def params(self) -> dict[str, Any]:
        return {"c": self.c}

    def _index(self, c: float, log_t: float) -> int:
        """The arm to play: which statistic to learn, then the cheapest arm that reveals it.

        Each observed mean gets an interval; the reward ``(1-q) e + q (g - off) - edge`` grows
        with e and g and is linear in q, so its maximum over the intervals is at e and g's
        upper ends and one of q's.
        """
        stats, rm = self.stats, self._rewards
        w = stats.w
        root = math.sqrt(w * log_t) * c  # the stored sums are scaled by w (ArmStats)
        lin = w * log_t * c
        k = self.n_arms
        upper, upper_at_g, score = [0.0] * k, [0.0] * k, [0.0] * k
        best, best_index = k - 1, -math.inf
        for j in range(k - 1, -1, -1):
            t = stats.terms(j, rm)
            if t is None:
                return j
            q, e_mean, g, edge, off, aq, bq, ae, be, ag, bg = t
            g_hi = 1.0 if g < 0.0 else min(1.0, g + ag * root + bg * lin)
            e_hi = 1.0 if e_mean < 0.0 else min(1.0, e_mean + ae * root + be * lin)
            d = aq * root + bq * lin
            slope = g_hi - off - e_hi  # d(reward)/dq at the upper ends
            upper[j] = e_hi + (min(1.0, q + d) if slope > 0.0 else max(0.0, q - d)) * slope - edge
            slope = max(g, 0.0) - off - e_hi  # the same with C_L at its estimate (0: unseen)
            q_end = min(1.0, q + d) if slope > 0.0 else max(0.0, q - d)
            upper_at_g[j] = e_hi + q_end * slope - edge
            score[j] = stats.posterior_mean(j, edge, off)
            if upper[j] > best_index:
                best, best_index = j, upper[j]
        if best == k - 1:
            return best
        runner_up = max(u for i, u in enumerate(upper) if i != best)
        if upper_at_g[best] < runner_up:
            return best  # C_L when exit `best` is unsure: only `best` itself reveals it
        pick, top = best, -math.inf
        for i in range(k - 1, best - 1, -1):  # exits 0..i: every deeper arm reveals best's
            if score[i] > top:
                pick, top = i, score[i]
        return pick


class DiscountedUCB(ISplitEE):
    """I-SplitEE with discounting (D-UCB, Garivier & Moulines 2011) for scenes that change.

    Every round all statistics shrink by ``discount``: the policy remembers about
    ``1 / (1 - discount)`` rounds, and its horizon is that discounted number of rounds. Chosen
    over a sliding window because it needs O(arms) state and late (offload) observations
    simply add weight; an arm left alone sees its counts decay and its bonus grow, so it is
    re-tried after a change. Its default c is I-SplitEE's recommended one.
    """

    name = "isplitee-paper-nonstationary"
    DEFAULT_C: ClassVar[float] = 0.25
    DEFAULT_DISCOUNT: ClassVar[float] = 0.995

    def __init__(
        self, rewards: RewardModel, *, c: float | None = None, discount: float | None = None
    ) -> None:
        super().__init__(rewards, c=c)
        self.discount = check_discount(self.DEFAULT_DISCOUNT if discount is None else discount)
        self._total = 0.0  # discounted number of rounds: sum of discount**k

    def _on_round(self) -> None:
        self.stats.discount(self.discount)
        self._total = self._total * self.discount + 1.0

    def _horizon(self) -> float:
        return max(self._total, 1.0)

    def params(self) -> dict[str, Any]:
        return {"c": self.c, "discount": self.discount}

    def _extra_state(self) -> dict[str, Any]:
        return {"total": self._total}

    def _load_extra(self, extra: Mapping[str, Any]) -> None:
        self._total = check_total(extra["total"])

"""The audited policy: I-SplitEE refereed by audits (the ``isplitee`` and
``isplitee-nonstationary`` specs).

Every choice is priced by agreement with the final classifier, not by confidence: answer at a
trusted exit j (``1 - D_j`` minus its cost), audit at j (offload whatever the exit says), or
the whole network. An exit that is not trusted never publishes; one worth trusting is audited
until trust is earned or refuted. docs/bandit.md ("The audited policy") has the values and the
guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from shared.cost import Observation, RewardModel
from shared.policy.checks import check_counts, is_number
from shared.policy.referee import THRESHOLDS, Referee
from shared.policy.ucb import ISplitEE, check_total
from shared.protocol import FRAME_BLOCK

__all__ = ["AuditedSplitEE"]


class AuditedSplitEE(ISplitEE):
    """I-SplitEE refereed by audits (docs/bandit.md, "The audited policy").

    Each decision answers at a trusted exit j (exit if ``C_j >= tau_j``, its threshold, else
    offload; on the referee's schedule it is an audit instead), audits at exit j, or runs the
    whole network. Where the whole network on the device costs less than the offload at the
    chosen split, an audit is played as the last arm, which reveals the final class just as
    independently of the frame. A change the referee detects also resets the exit statistics.

    ``discount`` (None: stationary between detected changes) discounts the exit statistics
    as in :class:`~shared.policy.ucb.DiscountedUCB`; the referee has its own memory.
    """

    name = "isplitee"
    DEFAULT_DISCOUNT: ClassVar[float] = 0.995
    DEFAULT_TARGET: ClassVar[float] = 0.02
    DEFAULT_MIN_AUDIT_RATE: ClassVar[float] = 0.05

    def __init__(
        self,
        rewards: RewardModel,
        *,
        c: float | None = None,
        discount: float | None = None,
        target: float | None = None,
        min_audit_rate: float | None = None,
        referee: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(rewards, c=c)
        if discount is not None and not (is_number(discount) and 0.0 < discount < 1.0):
            raise ValueError(f"discount should be in (0, 1) or None, got {discount!r}")
        self.discount = None if discount is None else float(discount)
        self._total = 0.0
        options = dict(referee or {})
        options.setdefault("target", self.DEFAULT_TARGET if target is None else target)
        options.setdefault(
            "min_rate", self.DEFAULT_MIN_AUDIT_RATE if min_audit_rate is None else min_audit_rate
        )
        self.referee = Referee(self.n_arms - 1, **options)
        self._pending_audit = False
        # per exit j: samples that computed it (_cn) and, per stricter threshold k, those
        # with C_j >= THRESHOLDS[k] (_c[j * len(THRESHOLDS) + k]); kept in the statistics'
        # stored units, so discounting and renormalising treat them alike
        self._cn = [0.0] * (self.n_arms - 1)
        self._c = [0.0] * ((self.n_arms - 1) * len(THRESHOLDS))
        self.stats.track(self._cn, self._c)

    @property
    def spec(self) -> str:
        return "isplitee" if self.discount is None else "isplitee-nonstationary"

    @property
    def target(self) -> float:
        return self.referee.target

    def _on_round(self) -> None:
        if self.discount is not None:
            self.stats.discount(self.discount)
            self._total = self._total * self.discount + 1.0

    def _horizon(self) -> float:
        return max(self._total if self.discount is not None else self.rounds, 1.0)

    def _choose(self) -> int:
        rm, ref = self._rewards, self.referee
        mu, cost = rm.mu, rm.cost
        last = self.n_arms - 1
        log_t = math.log(self._horizon())
        best, best_value, audit = last, 1.0 - mu * cost.edge[last], False
        for j in range(last):
            edge, off = mu * cost.edge[j], mu * cost.offload[j]
            value, forced = 1.0 - edge - off, True  # audit at j
            if ref.plausible(j):
                answer = 1.0 - ref.lower(j) - edge - self._q_low(j, ref.level(j), log_t) * off
                if answer > value:
                    value, forced = answer, not ref.trusted(j)
                k = ref.explore_level(j)
                if k is not None:  # a lower threshold, not yet trusted: worth auditing for?
                    explore = 1.0 - ref.lower_at(j, k) - edge - self._q_low(j, k, log_t) * off
                    if explore > value:
                        value, forced = explore, True
            if value > best_value + 1e-12:
                best, best_value, audit = j, value, forced
        audit = audit or (best != last and ref.audit_now())
        if audit and cost.edge[last] <= cost.edge[best] + cost.offload[best]:
            # The whole network on the device reveals the final class as independently as an
            # offload does, and here costs less (a fast device behind a slow link).
            best, audit = last, False
        self._pending_audit = audit
        return best

    def _confident_at(self, j: int, k: int) -> tuple[float, float]:
        """Samples that computed exit j and, of them, those confident at level k (stored
        units): the base statistics at alpha, this policy's own counts above it."""
        if k == 0:
            return self.stats.n[j], self.stats.e[j]
        return self._cn[j], self._c[j * len(THRESHOLDS) + k - 1]

    def _q_low(self, j: int, k: int, log_t: float) -> float:
        """Lower confidence bound of the share of frames exit j offloads at level k (the
        optimistic end: fewer offloads), 0 before any sample."""
        n, e = self._confident_at(j, k)
        if n <= 0.0:
            return 0.0
        q, w = (n - e) / n, self.stats.w
        bonus = self.c * (math.sqrt(2.0 * q * (1.0 - q) * w * log_t / n) + 3.0 * w * log_t / n)
        return max(0.0, q - bonus)

    def _audit(self, arm: int) -> bool:
        return self._pending_audit

    def _threshold(self, arm: int) -> float | None:
        if arm == self.n_arms - 1 or self.referee.level(arm) == 0:
            return None
        return self.referee.threshold(arm, self._rewards.alpha)

    def _observed(self, arm: int, obs: Observation) -> None:
        alpha = self._rewards.alpha
        w, width = self.stats.w, len(THRESHOLDS)
        conf = obs.confidences
        for j in range(min(len(conf), self.n_arms - 1)):
            self._cn[j] += w
            x = conf[j]
            for k, tau in enumerate(THRESHOLDS):
                if x < tau:
                    break
                self._c[j * width + k] += w
        # The change detector watches the model's first exit (arm 1 when arm 0 is the frame
        # itself, which computes none).
        first = 1 if self._rewards.cost.blocks[0] == FRAME_BLOCK else 0
        if first < min(len(conf), self.n_arms - 1) and self.referee.watch(conf[first], alpha):
            self.stats.reset()  # the scene changed: the exits' confidences with it
        independent = obs.audit or arm == self.n_arms - 1
        if first and len(conf) == 1:  # the frame arm, its reply without the exits: nothing
            return  # to referee, and no reason to audit less
        if independent and obs.classes is not None and obs.final_class is not None:
            self.referee.record(obs.confidences, obs.classes, obs.final_class, alpha)

    def arm_stats(self) -> list[dict[str, Any]]:
        out = super().arm_stats()
        alpha = self._rewards.alpha
        for j, ref in enumerate(self.referee.stats()):
            out[j]["agreement"] = ref["agreement"]
            out[j]["trusted"] = ref["trusted"]
            out[j]["threshold"] = self.referee.threshold(j, alpha)
            k = self.referee.level(j)
            if k > 0:  # how often it reaches the threshold it answers at
                cn, c = self._confident_at(j, k)
                out[j]["exit_rate"] = c / cn if cn > 0 else None
        return out

    def params(self) -> dict[str, Any]:
        return {"c": self.c, "discount": self.discount, "referee": self.referee.params()}

    def _extra_state(self) -> dict[str, Any]:
        return {
            "total": self._total,
            "referee": self.referee.to_state(),
            "pending_audit": self._pending_audit,
            "confident": {
                "n": [v / self.stats.w for v in self._cn],
                "c": [v / self.stats.w for v in self._c],
            },
        }

    @classmethod
    def widen(cls, params: dict[str, Any], extra: dict[str, Any]) -> None:
        extra["referee"] = Referee.widened_state(extra["referee"])
        confident = extra.get("confident")
        if confident is not None:
            extra["confident"] = {
                "n": [0.0, *confident["n"]],
                "c": [0.0] * len(THRESHOLDS) + list(confident["c"]),
            }

    def _load_extra(self, extra: Mapping[str, Any]) -> None:
        self._total = check_total(extra["total"])
        self.referee = Referee.from_state(self.n_arms - 1, extra["referee"])
        self._pending_audit = bool(extra["pending_audit"])
        confident = extra.get("confident")  # absent in states saved before thresholds
        if confident is not None:
            n = check_counts("confident.n", confident["n"], len(self._cn))
            c = check_counts("confident.c", confident["c"], len(self._c))
            if any(x > n[i // len(THRESHOLDS)] * (1 + 1e-9) for i, x in enumerate(c)):
                raise ValueError("confident: more confident samples than samples")
            self._cn[:] = [v * self.stats.w for v in n]
            self._c[:] = [v * self.stats.w for v in c]

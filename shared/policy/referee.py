"""The referee: learns from audits whether each early exit agrees with the final classifier.

An early exit's confidence says nothing about whether its answer is right once the scene
changes. An audit (a frame offloaded whatever its exit says) shows, for every exit computed,
whether it would have published the final classifier's label. An exit is trusted only while
the Wilson upper bound of its disagreement rate is within ``target``, at the lowest threshold
where that holds. docs/bandit.md ("The referee") states the guarantee, its assumptions and the
bound on how fast trust is withdrawn after a change.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from shared.policy.agreement import LEVELS, THRESHOLDS, Agreement
from shared.policy.checks import check_unit
from shared.policy.schedule import AuditSchedule, ChangeDetector
from shared.policy.wilson import (
    audits_to_trust,
    disagreements_to_distrust,
    wilson_audits_needed,
    wilson_bounds,
)

__all__ = ["THRESHOLDS", "Referee"]

_STATE_KEYS = (
    *("params", "n", "d", "alpha", "agree_n", "agree_d", "rate", "credit"),
    *("fast", "slow", "seen", "audits", "decisions", "changes"),
)


class Referee:
    """Per-exit agreement with the final classifier, learnt from audits; the audit schedule.

    ``n_exits``: the exits that can answer early (every arm but the last). Pure logic: the
    policy calls :meth:`watch` with every sample's exit-0 confidence, :meth:`record` with every
    sample whose final class was revealed independently of the exits (an audit, or the whole
    network on the device), and :meth:`audit_now` once per decision.
    """

    LEVELS: ClassVar[int] = LEVELS

    def __init__(
        self,
        n_exits: int,
        *,
        target: float = 0.02,
        z: float = 2.0,
        min_rate: float = 0.05,
        max_rate: float = 1.0,
        decay: float = 0.9,
        memory: float | None = None,
        shift: float = 0.25,
        patience: float = 2.0,
    ) -> None:
        if not (isinstance(n_exits, int) and n_exits >= 0):
            raise ValueError(f"n_exits should be an integer >= 0, got {n_exits!r}")
        self.n_exits = n_exits
        self.target = check_unit("target", target, open_low=True)
        if not (isinstance(z, numbers.Real) and 0.0 < z < math.inf):
            raise ValueError(f"z should be a positive number, got {z!r}")
        self.z = float(z)
        self.schedule = AuditSchedule(min_rate=min_rate, max_rate=max_rate, decay=decay)
        self.detector = ChangeDetector(shift=shift)
        self.min_rate, self.max_rate = self.schedule.min_rate, self.schedule.max_rate
        self.decay, self.shift = self.schedule.decay, self.detector.shift
        if not (isinstance(patience, numbers.Real) and 1.0 <= patience < math.inf):
            raise ValueError(f"patience should be a number >= 1, got {patience!r}")
        self.patience = float(patience)
        # the (discounted) audits a flawless exit needs to be trusted: z^2 (1 - target) / target
        self.clean_audits = self.z**2 * (1.0 - self.target) / self.target
        if memory is None:  # long enough to hold 2.5 times that: about 500 audits by default
            memory = 1.0 - 1.0 / (2.5 * self.clean_audits)
        self.memory = check_unit("memory", memory, open_low=True)
        if self.memory < 1.0 and 1.0 / (1.0 - self.memory) <= self.clean_audits:
            raise ValueError(
                f"memory {memory!r} holds about {1.0 / (1.0 - self.memory):.0f} audits, fewer "
                f"than the {self.clean_audits:.0f} an exit needs to be trusted at target "
                f"{self.target:g}: no exit could ever answer"
            )
        self.agreement = Agreement(n_exits, self.memory)
        self._level = [0] * n_exits  # each exit's threshold, as a level (0: alpha)
        self._alpha: float | None = None  # alpha of the last record: which levels count
        # what the policy asks on every decision, refreshed whenever the counts change
        self._lower = [0.0] * n_exits
        self._trust = [False] * n_exits
        self._plaus = [True] * n_exits
        self._explore: list[int | None] = [None] * n_exits

    # -- the schedule ------------------------------------------------------------------------------
    def audit_now(self) -> bool:
        """Whether this decision is an audit (:class:`~shared.policy.schedule.AuditSchedule`)."""
        return self.schedule.audit_now()

    @property
    def audit_rate(self) -> float:
        """Share of decisions audited so far (the schedule's current rate is ``rate``)."""
        return self.schedule.audit_rate

    @property
    def rate(self) -> float:
        """The schedule's current audit rate."""
        return self.schedule.rate

    @property
    def changes(self) -> int:
        """Changes of scene the detector saw."""
        return self.detector.changes

    # -- learning --------------------------------------------------------------------------------
    def watch(self, confidence0: float, alpha: float) -> bool:
        """Every sample's exit-0 confidence: a free change detector. True when it fired."""
        if self.detector.watch(confidence0 >= alpha):
            self.forget()
            return True
        return False

    def forget(self) -> None:
        """Drop what was learnt (the scene changed) and audit at the highest rate."""
        self.agreement.forget()
        self.schedule.restart()
        self._relevel()

    def record(
        self,
        confidences: Sequence[float],
        classes: Sequence[int],
        final_class: int,
        alpha: float,
    ) -> None:
        """One sample whose final class was revealed independently of its exits.

        ``confidences``/``classes``: the exits the device computed, shallowest first (a sample
        that ran the whole network also lists the last arm, which is ignored here).
        """
        levels = (alpha, *THRESHOLDS)
        # a disagreement a trusted exit would have published, at the threshold it answers at
        alarm = any(
            classes[j] != final_class
            and self._trust[j]
            and confidences[j] >= levels[self._level[j]]
            for j in range(min(len(confidences), self.n_exits))
        )
        self.agreement.record(confidences, classes, final_class, levels)
        self.schedule.audited(alarm)
        self._alpha = alpha
        self._relevel()

    def _relevel(self) -> None:
        """Each exit's threshold: the lowest trusted level, else the lowest plausible one,
        else alpha (then the exit is neither); its bounds, trust and plausibility there, and
        the lowest plausible level below a trusted one (worth auditing for), which decisions
        read. Every audit updates the counts at every level, so an exit trusted at a strict
        level moves down as soon as a lower one is trusted too."""
        alpha, n, z, target = self._alpha, self.agreement.n, self.z, self.target
        candidates = [0]
        if alpha is not None:
            candidates += [k for k, tau in enumerate(THRESHOLDS, start=1) if tau > alpha]
        for j in range(self.n_exits):
            d = self.agreement.d[j]
            # a stricter level never counts more disagreements, so its bound is never higher:
            # if the strictest candidate is not trusted, none is
            trusted = n[j] > 0.0 and wilson_bounds(d[candidates[-1]], n[j], z)[1] <= target
            explore = None
            if trusted:
                level = next(k for k in candidates if wilson_bounds(d[k], n[j], z)[1] <= target)
                plausible = True
                explore = next(
                    (k for k in candidates if k < level and self._plausible_at(j, k)), None
                )
            else:
                found = next((k for k in candidates if self._plausible_at(j, k)), None)
                level, plausible = (0, False) if found is None else (found, True)
            self._level[j] = level
            self._explore[j] = explore
            self._lower[j] = wilson_bounds(d[level], n[j], z)[0]
            self._trust[j] = trusted
            self._plaus[j] = plausible

    def threshold(self, j: int, alpha: float) -> float:
        """The confidence at which exit j answers (alpha, or a stricter one of THRESHOLDS)."""
        k = self._level[j]
        return alpha if k == 0 else THRESHOLDS[k - 1]

    def level(self, j: int) -> int:
        """Exit j's threshold as a level: 0 is alpha, k > 0 is ``THRESHOLDS[k - 1]``."""
        return self._level[j]

    # -- what the policy asks --------------------------------------------------------------------
    def bounds(self, j: int) -> tuple[float, float]:
        """Wilson interval of exit j's disagreement rate D_j at its threshold."""
        return wilson_bounds(self.agreement.d[j][self._level[j]], self.agreement.n[j], self.z)

    def lower(self, j: int) -> float:
        """The lower end of :meth:`bounds`."""
        return self._lower[j]

    def explore_level(self, j: int) -> int | None:
        """A level below exit j's trusted one that is still worth auditing for (the lowest),
        or None: the policy audits for it while its optimistic value beats answering now."""
        return self._explore[j]

    def lower_at(self, j: int, k: int) -> float:
        """Lower Wilson bound of exit j's disagreement rate at level k."""
        return wilson_bounds(self.agreement.d[j][k], self.agreement.n[j], self.z)[0]

    def trusted(self, j: int) -> bool:
        """Exit j may answer at its threshold: its disagreement rate there is below
        ``target`` with confidence z."""
        return self._trust[j]

    def plausible(self, j: int) -> bool:
        """Exit j is worth pricing at its threshold: trusted there, or worth auditing to earn
        that trust (:meth:`_plausible_at`)."""
        return self._plaus[j]

    def _plausible_at(self, j: int, k: int) -> bool:
        """Exit j at level k is worth auditing to earn its trust.

        Its lower bound is within ``target``, and, once it has 10 % of the audits a flawless
        exit needs, the audits it would need at its observed rate (:meth:`audits_needed`) are
        at most ``patience`` times what a flawless exit needs: an exit whose rate sits just
        under the target would take thousands of audits (each a dearer offload than the
        baseline) to certify, and is not worth it.
        """
        n, d = self.agreement.n[j], self.agreement.d[j][k]
        if wilson_bounds(d, n, self.z)[0] > self.target:
            return False
        if n < 0.1 * self.clean_audits:
            return True
        return self.audits_needed(d / n) <= self._patient_audits

    @property
    def _patient_audits(self) -> float:
        """The most audits an exit may need to be worth auditing for: ``patience`` times a
        flawless exit's, and fewer than the memory holds (else trust could never come)."""
        capacity = math.inf if self.memory >= 1.0 else 0.95 / (1.0 - self.memory)
        return min(self.patience * self.clean_audits, capacity)

    def audits_needed(self, rate: float) -> float:
        """Audits after which an exit disagreeing on ``rate`` of them is trusted (inf: never).

        Smallest n with the Wilson upper bound of ``rate`` over n audits <= ``target``.
        """
        n = wilson_audits_needed(rate, self.target, self.z)
        return math.inf if n > 1e9 else max(n, 1.0)

    def audits_to_trust(self) -> int:
        """Agreeing audits in a row after which a new exit is trusted (memory included)."""
        return audits_to_trust(self.target, self.z, self.memory)

    def disagreements_to_distrust(self, agreeing: float | None = None) -> int:
        """Disagreeing audits in a row after which an exit backed by ``agreeing`` discounted
        agreeing audits (default: the most the memory holds) is no longer trusted."""
        return disagreements_to_distrust(self.target, self.z, self.memory, agreeing)

    def stats(self) -> list[dict[str, Any]]:
        """Per exit: audited samples, disagreement rate and bounds, trust, and the agreement
        of its confident answers over every audit since the start (JSON-ready). Disagreement
        and trust are at the exit's threshold; agreement is at alpha."""
        out = []
        for j in range(self.n_exits):
            lo, hi = self.bounds(j)
            n = self.agreement.n[j]
            an, ad = self.agreement.agree_n[j], self.agreement.agree_d[j]
            out.append(
                {
                    "audited": n,
                    "disagreement": self.agreement.d[j][self._level[j]] / n if n > 0 else None,
                    "disagreement_bounds": [lo, hi],
                    "trusted": self.trusted(j),
                    "agreement": 1.0 - ad / an if an > 0 else None,
                }
            )
        return out

    # -- persistence -----------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The constructor's keyword arguments that rebuild this referee."""
        return {
            "target": self.target,
            "z": self.z,
            "min_rate": self.min_rate,
            "max_rate": self.max_rate,
            "decay": self.decay,
            "memory": self.memory,
            "shift": self.shift,
            "patience": self.patience,
        }

    def to_state(self) -> dict[str, Any]:
        state = {
            "params": self.params(),
            **self.agreement.to_state(),
            "alpha": self._alpha,
            **self.schedule.to_state(),
            **self.detector.to_state(),
        }
        return {key: state[key] for key in _STATE_KEYS}

    @classmethod
    def widened_state(cls, state: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`to_state` output with one more exit in front that nothing was seen at."""
        return Agreement.widened(state)

    @classmethod
    def from_state(cls, n_exits: int, state: Mapping[str, Any]) -> Referee:
        """Inverse of :meth:`to_state`; a bad state raises ValueError/KeyError/TypeError."""
        ref = cls(n_exits, **state["params"])
        ref.agreement.load(state)
        alpha = state.get("alpha")
        ref._alpha = None if alpha is None else check_unit("referee.alpha", alpha)
        ref._relevel()
        ref.schedule.load(state)
        ref.detector.load(state)
        return ref

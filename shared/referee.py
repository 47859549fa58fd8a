"""The referee: learns from audits whether each early exit agrees with the final classifier.

An early exit's confidence says nothing about whether its answer is right once the scene
changes: under noise a shallow exit can be confidently wrong on most frames. The cloud's final
classifier answers every offloaded frame, so a frame offloaded *whatever its exit's
confidence* (an audit) shows, for every exit the device computed, whether that exit would have
published the same label as the final classifier. The referee keeps, per exit j::

    n_j  audited samples that computed exit j
    d_j  of them: C_j >= alpha (exit j would have answered) and its class != the final's

so ``D_j = d_j / n_j`` estimates ``P(C_j >= alpha and class_j != class_L)``, the share of *all*
frames on which answering at exit j publishes a label the final classifier would not.

The same audits count ``d_j(tau)`` at stricter thresholds too (:data:`THRESHOLDS`, those above
alpha): an exit that is confidently wrong under noise at 0.8 may still agree when it is 0.95
sure. Each exit answers at its own threshold ``tau_j``: the lowest of alpha and the stricter
ones at which it is trusted, or, while none is, the lowest that is still worth auditing for
(not refuted by the audits and certifiable within the referee's patience). A frame exits at j
only when ``C_j >= tau_j``; below that it is offloaded. Everything below holds for
``D_j = D_j(tau_j)``.

What it guarantees
------------------
A frame answered at exit j differs from the final classifier's answer only when exit j
disagrees, so the accuracy a policy loses against the final layer over the frames it plays at
arm j is at most D_j. An exit is **trusted** only while the Wilson upper bound of D_j at
``z`` standard errors is at most ``target``; an untrusted exit never answers (the policy
audits instead, i.e. offloads and publishes the cloud's answer). Hence, while the scene holds
still long enough for the bound to be valid, each trusted exit loses at most ``target`` of
accuracy against the final layer with the one-sided confidence of ``z`` (z = 2: about 97.7 %
per check). It is an online, label-free analogue of CALM's calibrated exits (Schuster et al.
2022): agreement with the full model, not accuracy, and checked as the scene changes. Which
threshold an exit answers at is chosen from the same audits (the lowest trusted of at most
``LEVELS`` = 7 candidates, each a stricter subset of the frames of the one before), so the
check at the chosen threshold is one of at most seven on the same audits: its confidence is
not below ``1 - 7 (1 - P(z))`` by the union bound (84 % at z = 2), and nearer ``P(z)`` in
practice, since the candidates' counts are nested and move together.

Assumptions (the caller's): audits are chosen without looking at the frame (the schedule
below is a deterministic credit counter: every ``1/rate``-th decision), so audited frames are
drawn like the stream; samples are exchangeable within the referee's memory (``memory``
discounts each older audit, so roughly the last ``1 / (1 - memory)`` audits count); the
cloud's reply is lost independently of its content.

After a change
--------------
How fast an exit that turns confidently wrong stops being trusted is bounded, whatever its
confidences do: the next audit comes within ``ceil(1 / min_rate)`` decisions; a confident
disagreement at a trusted exit sets the audit rate to ``max_rate`` (1: every frame is
audited, so nothing is published from the exits), and the exit's upper bound crosses
``target`` after at most :meth:`Referee.disagreements_to_distrust` further disagreeing
audits (at alpha: the exit may stay trusted at a stricter threshold its confidences do not
reach, which answers none of those frames). ``tests/test_referee.py`` checks the bound. A
change that moves the confidences
themselves (the share of frames on which exit 0 is confident, seen on every frame for free)
is caught sooner: a fast and a slow running mean of that share drift apart by more than
``shift``, and then everything learnt is forgotten and audits go to ``max_rate`` until trust
is re-earned. The audit rate decays by ``decay`` per audit that finds every confident exit in
agreement, down to ``min_rate``: audits become rare when the exits keep agreeing.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from shared.bandit import _STATS, ISplitEE, _discount_round
from shared.cost import Observation, RewardModel
from shared.protocol import FRAME_BLOCK

__all__ = ["THRESHOLDS", "AuditedSplitEE", "Referee", "wilson_audits_needed", "wilson_bounds"]

THRESHOLDS: tuple[float, ...] = (0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
"""Stricter exit thresholds the referee checks beside alpha (those above alpha count)."""


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


def _check_unit(name: str, value: object, *, open_low: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (0.0 < v <= 1.0) if open_low else (0.0 <= v <= 1.0)
    if not ok:
        span = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"{name} should be in {span}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


class Referee:
    """Per-exit agreement with the final classifier, learnt from audits; the audit schedule.

    ``n_exits``: the exits that can answer early (every arm but the last). Pure logic: the
    policy calls :meth:`watch` with every sample's exit-0 confidence, :meth:`record` with every
    sample whose final class was revealed independently of the exits (an audit, or the whole
    network on the device), and :meth:`audit_now` once per decision.
    """

    LEVELS: ClassVar[int] = 1 + len(THRESHOLDS)

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
        self.target = _check_unit("target", target, open_low=True)
        if not (isinstance(z, numbers.Real) and 0.0 < z < math.inf):
            raise ValueError(f"z should be a positive number, got {z!r}")
        self.z = float(z)
        self.min_rate = _check_unit("min_rate", min_rate, open_low=True)
        self.max_rate = _check_unit("max_rate", max_rate, open_low=True)
        if self.min_rate > self.max_rate:
            raise ValueError(f"min_rate {min_rate!r} should be at most max_rate {max_rate!r}")
        self.decay = _check_unit("decay", decay)
        self.shift = _check_unit("shift", shift, open_low=True)
        if not (isinstance(patience, numbers.Real) and 1.0 <= patience < math.inf):
            raise ValueError(f"patience should be a number >= 1, got {patience!r}")
        self.patience = float(patience)
        # the (discounted) audits a flawless exit needs to be trusted: z^2 (1 - target) / target
        self.clean_audits = self.z**2 * (1.0 - self.target) / self.target
        if memory is None:  # long enough to hold 2.5 times that: about 500 audits by default
            memory = 1.0 - 1.0 / (2.5 * self.clean_audits)
        self.memory = _check_unit("memory", memory, open_low=True)
        if self.memory < 1.0 and 1.0 / (1.0 - self.memory) <= self.clean_audits:
            raise ValueError(
                f"memory {memory!r} holds about {1.0 / (1.0 - self.memory):.0f} audits, fewer "
                f"than the {self.clean_audits:.0f} an exit needs to be trusted at target "
                f"{self.target:g}: no exit could ever answer"
            )
        self._n = [0.0] * n_exits
        # _d[j][k]: disagreements at level k, the threshold (alpha, *THRESHOLDS)[k]
        self._d = [[0.0] * self.LEVELS for _ in range(n_exits)]
        self._level = [0] * n_exits  # each exit's threshold, as a level (0: alpha)
        self._alpha: float | None = None  # alpha of the last record: which levels count
        # what the policy asks on every decision, refreshed whenever the counts change
        self._lower = [0.0] * n_exits
        self._trust = [False] * n_exits
        self._plaus = [True] * n_exits
        self._explore: list[int | None] = [None] * n_exits
        self._agree_n = [0.0] * n_exits  # confident and computed, for the agreement report
        self._agree_d = [0.0] * n_exits
        self.rate = self.max_rate
        self._credit = 0.0
        self._fast = 0.0  # running means of "exit 0 confident" since the last reset
        self._slow = 0.0
        self._seen = 0
        self.audits = 0
        self.decisions = 0
        self.changes = 0

    # -- the schedule ----------------------------------------------------------------------------
    def audit_now(self) -> bool:
        """Whether this decision is an audit: a credit counter, so audits are spread evenly
        and never depend on the frame (the consistency assumption)."""
        self.decisions += 1
        self._credit += self.rate
        if self._credit >= 1.0 - 1e-12:
            self._credit -= 1.0
            self.audits += 1
            return True
        return False

    @property
    def audit_rate(self) -> float:
        """Share of decisions audited so far (the schedule's current rate is ``rate``)."""
        return self.audits / self.decisions if self.decisions else 0.0

    # -- learning --------------------------------------------------------------------------------
    def watch(self, confidence0: float, alpha: float) -> bool:
        """Every sample's exit-0 confidence: a free change detector. True when it fired."""
        x = 1.0 if confidence0 >= alpha else 0.0
        self._seen += 1
        self._fast += (x - self._fast) / min(self._seen, 50)
        self._slow += (x - self._slow) / min(self._seen, 500)
        if self._seen >= 50 and abs(self._fast - self._slow) > self.shift:
            self.forget()
            self._seen = 0  # both means start again from the new scene
            self.changes += 1
            return True
        return False

    def forget(self) -> None:
        """Drop what was learnt (the scene changed) and audit at the highest rate."""
        self._n = [0.0] * self.n_exits
        self._d = [[0.0] * self.LEVELS for _ in range(self.n_exits)]
        self.rate = self.max_rate
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
        trusted_before = list(self._trust)
        levels = (alpha, *THRESHOLDS)
        alarm = False
        memory = self.memory
        for j in range(min(len(confidences), self.n_exits)):
            c = confidences[j]
            differs = classes[j] != final_class
            self._n[j] = self._n[j] * memory + 1.0
            d = self._d[j]
            for k, tau in enumerate(levels):
                d[k] = d[k] * memory + (1.0 if differs and c >= tau else 0.0)
            if c >= alpha:
                self._agree_n[j] += 1.0
                self._agree_d[j] += 1.0 if differs else 0.0
            # a disagreement the exit would have published, at the threshold it answers at
            alarm |= differs and trusted_before[j] and c >= levels[self._level[j]]
        self.rate = self.max_rate if alarm else max(self.min_rate, self.rate * self.decay)
        self._alpha = alpha
        self._relevel()

    def _relevel(self) -> None:
        """Each exit's threshold: the lowest trusted level, else the lowest plausible one,
        else alpha (then the exit is neither); its bounds, trust and plausibility there, and
        the lowest plausible level below a trusted one (worth auditing for), which decisions
        read. Every audit updates the counts at every level, so an exit trusted at a strict
        level moves down as soon as a lower one is trusted too."""
        alpha, n, z, target = self._alpha, self._n, self.z, self.target
        candidates = [0]
        if alpha is not None:
            candidates += [k for k, tau in enumerate(THRESHOLDS, start=1) if tau > alpha]
        for j in range(self.n_exits):
            d = self._d[j]
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
        """Wilson interval of exit j's disagreement rate D_j at its threshold (module
        docstring)."""
        return wilson_bounds(self._d[j][self._level[j]], self._n[j], self.z)

    def lower(self, j: int) -> float:
        """The lower end of :meth:`bounds`."""
        return self._lower[j]

    def explore_level(self, j: int) -> int | None:
        """A level below exit j's trusted one that is still worth auditing for (the lowest),
        or None: the policy audits for it while its optimistic value beats answering now."""
        return self._explore[j]

    def lower_at(self, j: int, k: int) -> float:
        """Lower Wilson bound of exit j's disagreement rate at level k."""
        return wilson_bounds(self._d[j][k], self._n[j], self.z)[0]

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
        n, d = self._n[j], self._d[j][k]
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
        n, k = 0.0, 0
        while not (n > 0.0 and wilson_bounds(0.0, n, self.z)[1] <= self.target):
            n, k = n * self.memory + 1.0, k + 1
        return k

    def disagreements_to_distrust(self, agreeing: float | None = None) -> int:
        """Disagreeing audits in a row after which an exit backed by ``agreeing`` discounted
        agreeing audits (default: the most the memory holds, ``1 / (1 - memory)``) is no
        longer trusted."""
        if agreeing is None:
            agreeing = math.inf if self.memory >= 1.0 else 1.0 / (1.0 - self.memory)
        n, d = float(agreeing), 0.0
        if math.isinf(n):
            raise ValueError("memory 1 keeps every audit: no finite bound")
        for k in range(1, 100_000):
            n = n * self.memory + 1.0
            d = d * self.memory + 1.0
            if wilson_bounds(d, n, self.z)[1] > self.target:
                return k
        raise ValueError("no bound within 100000 audits")  # pragma: no cover

    def stats(self) -> list[dict[str, Any]]:
        """Per exit: audited samples, disagreement rate and bounds, trust, and the agreement
        of its confident answers over every audit since the start (JSON-ready). Disagreement
        and trust are at the exit's threshold; agreement is at alpha."""
        out = []
        for j in range(self.n_exits):
            lo, hi = self.bounds(j)
            n = self._n[j]
            an, ad = self._agree_n[j], self._agree_d[j]
            out.append(
                {
                    "audited": n,
                    "disagreement": self._d[j][self._level[j]] / n if n > 0 else None,
                    "disagreement_bounds": [lo, hi],
                    "trusted": self.trusted(j),
                    "agreement": 1.0 - ad / an if an > 0 else None,
                }
            )
        return out

    # -- persistence -----------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
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
        return {
            "params": self.params(),
            "n": list(self._n),
            "d": [list(d) for d in self._d],
            "alpha": self._alpha,
            "agree_n": list(self._agree_n),
            "agree_d": list(self._agree_d),
            "rate": self.rate,
            "credit": self._credit,
            "fast": self._fast,
            "slow": self._slow,
            "seen": self._seen,
            "audits": self.audits,
            "decisions": self.decisions,
            "changes": self.changes,
        }

    @classmethod
    def widened_state(cls, state: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`to_state` output with one more exit in front that nothing was seen at."""
        out = dict(state)
        for key in ("n", "agree_n", "agree_d"):
            out[key] = [0.0, *state[key]]
        out["d"] = [[0.0] * cls.LEVELS, *state["d"]]
        return out

    @classmethod
    def from_state(cls, n_exits: int, state: Mapping[str, Any]) -> Referee:
        """Inverse of :meth:`to_state`; a bad state raises ValueError/KeyError/TypeError."""
        ref = cls(n_exits, **state["params"])
        for key in ("n", "agree_n", "agree_d"):
            values = state[key]
            if not (
                isinstance(values, list)
                and len(values) == n_exits
                and all(
                    isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 <= v < math.inf
                    for v in values
                )
            ):
                raise ValueError(f"referee.{key} should be {n_exits} finite numbers >= 0")
            setattr(ref, f"_{key}", [float(v) for v in values])
        ref._d = _disagreements(state["d"], n_exits, cls.LEVELS)
        if any(x > n * (1 + 1e-9) for d, n in zip(ref._d, ref._n, strict=True) for x in d):
            raise ValueError("referee: more disagreements than audits")
        alpha = state.get("alpha")
        if alpha is not None:
            alpha = _check_unit("referee.alpha", alpha)
        ref._alpha = alpha
        ref._relevel()
        ref.rate = _check_unit("referee.rate", state["rate"], open_low=True)
        ref._credit = float(state["credit"])
        ref._fast, ref._slow = float(state["fast"]), float(state["slow"])
        for key in ("audits", "decisions", "changes", "seen"):
            v = state[key]
            if not (isinstance(v, int) and v >= 0):
                raise ValueError(f"referee.{key} should be an integer >= 0, got {v!r}")
            setattr(ref, key if key != "seen" else "_seen", v)
        return ref


def _is_count(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 <= v < math.inf


def _disagreements(values: object, n_exits: int, levels: int) -> list[list[float]]:
    """A state's ``d``: per exit, a count per level. A state saved before levels existed holds
    one count per exit, at alpha; it stands for every stricter level too, an upper bound (an
    exit confident at a stricter threshold is confident at alpha), so nothing is trusted
    sooner than it would have been."""
    if not (isinstance(values, list) and len(values) == n_exits):
        raise ValueError(f"referee.d should hold {n_exits} exits")
    out = []
    for v in values:
        if _is_count(v):
            out.append([float(v)] * levels)  # type: ignore[arg-type]
        elif (
            isinstance(v, list)
            and len(v) == levels
            and all(_is_count(x) for x in v)
            and all(b <= a * (1 + 1e-9) for a, b in itertools.pairwise(v[1:]))
        ):  # THRESHOLDS ascend, so each counts no more than the one before (alpha may be above)
            out.append([float(x) for x in v])
        else:
            raise ValueError(
                f"referee.d should hold, per exit, {levels} finite counts >= 0, got {v!r}"
            )
    return out


class AuditedSplitEE(ISplitEE):
    """I-SplitEE refereed by audits: the ``isplitee`` and ``isplitee-nonstationary`` specs.

    Each decision is one of: answer at a trusted exit j (exit if ``C_j >= tau_j``, its
    threshold, else offload; on the referee's schedule it is an audit instead), audit at
    exit j (offload whatever the exit says: the frame's result is the cloud's), or the whole
    network. Every
    choice is priced by **agreement with the final classifier**, not by confidence: a frame
    the final classifier answers agrees with it by definition, so an option's value is its
    share of frames published with the final classifier's label minus ``mu`` times its cost::

        answer at j:   1 - D_j - mu (edge_j + q_j offload_j)
        audit at j:    1       - mu (edge_j + offload_j)
        whole network: 1       - mu edge_last

    with q_j the share of frames exit j is unsure of at its threshold (``C_j < tau_j``; seen
    on every frame that computes it, so cheap to learn; upper confidence bounds as in
    I-SplitEE) and D_j the referee's disagreement rate there. Exploration is safe: a split
    whose exit is plausible but not yet trusted is valued optimistically (D_j at its lower
    bound) and, if chosen, played as an audit until its trust is earned or refuted; an exit
    that is not trusted never publishes. Likewise for an exit trusted only at a strict
    threshold: a lower one still plausible is priced the same optimistic way, and while that
    beats answering now the exit is audited for it.
    Under the paper's costs the fallback when no exit is trusted is the offload-all baseline
    (audit at block 3, 57.9 % cheaper than the whole network at its accuracy).

    An audit needs the final classifier's answer, not the cloud as such: where running the
    whole network on the device costs less than the offload at the chosen split (measured
    costs of a fast device behind a slow link), the audit is played as the last arm instead,
    which reveals every exit's answer and the final class just as independently of the frame.

    Guarantee (module docstring): on the frames a trusted exit answers, the published label
    differs from the final classifier's on at most ``target`` of the frames, with the
    referee's confidence z, as long as the scene is steady over the referee's memory; so
    accuracy is within ``target`` of the final layer's. After a change, trust is withdrawn
    within the bound :meth:`Referee.disagreements_to_distrust` gives (plus one audit
    interval). A detected change (the referee's free detector) also resets the exit
    statistics, so the prices follow the new scene.

    ``discount`` (None: stationary between detected changes) discounts the exit statistics
    as in :class:`~shared.bandit.DiscountedUCB`; the referee has its own memory.
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
        if discount is not None and not (
            isinstance(discount, numbers.Real) and 0.0 < discount < 1.0
        ):
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
        # with C_j >= THRESHOLDS[k] (_c[j * len(THRESHOLDS) + k]); stored times _w like the
        # base statistics, so discounting and renormalising treat them alike
        self._cn = [0.0] * (self.n_arms - 1)
        self._c = [0.0] * ((self.n_arms - 1) * len(THRESHOLDS))

    @property
    def spec(self) -> str:
        return "isplitee" if self.discount is None else "isplitee-nonstationary"

    @property
    def target(self) -> float:
        return self.referee.target

    def _on_round(self) -> None:
        if self.discount is not None:
            self._total = _discount_round(self, self.discount, self._total)

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
        times ``_w``): the base statistics at alpha, this policy's own counts above it."""
        if k == 0:
            return self._n[j], self._e[j]
        return self._cn[j], self._c[j * len(THRESHOLDS) + k - 1]

    def _q_low(self, j: int, k: int, log_t: float) -> float:
        """Lower confidence bound of the share of frames exit j offloads at level k (the
        optimistic end: fewer offloads), 0 before any sample."""
        n, e = self._confident_at(j, k)
        if n <= 0.0:
            return 0.0
        q, w = (n - e) / n, self._w
        bonus = self.c * (math.sqrt(2.0 * q * (1.0 - q) * w * log_t / n) + 3.0 * w * log_t / n)
        return max(0.0, q - bonus)

    def _audit(self, arm: int) -> bool:
        return self._pending_audit

    def _threshold(self, arm: int) -> float | None:
        if arm == self.n_arms - 1 or self.referee.level(arm) == 0:
            return None
        return self.referee.threshold(arm, self._rewards.alpha)

    def _extra_sums(self) -> tuple[list[float], ...]:
        return (self._cn, self._c)

    def _observed(self, arm: int, obs: Observation) -> None:
        alpha = self._rewards.alpha
        w, width = self._w, len(THRESHOLDS)
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
            self._reset_statistics()
        independent = obs.audit or arm == self.n_arms - 1
        if first and arm == 0:  # the frame arm computed no exit: nothing to referee, and
            return  # no reason to audit less
        if independent and obs.classes is not None and obs.final_class is not None:
            self.referee.record(obs.confidences, obs.classes, obs.final_class, alpha)

    def _reset_statistics(self) -> None:
        """The scene changed: what the exits' confidences were like no longer holds."""
        for key in _STATS:
            setattr(self, f"_{key}", [0.0] * self.n_arms)
        self._cn = [0.0] * len(self._cn)
        self._c = [0.0] * len(self._c)
        self._fresh = [False] * self.n_arms

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

    def _params(self) -> dict[str, Any]:
        return {"c": self.c, "discount": self.discount, "referee": self.referee.params()}

    def _extra_state(self) -> dict[str, Any]:
        return {
            "total": self._total,
            "referee": self.referee.to_state(),
            "pending_audit": self._pending_audit,
            "confident": {
                "n": [v / self._w for v in self._cn],
                "c": [v / self._w for v in self._c],
            },
        }

    @classmethod
    def _widen(cls, params: dict[str, Any], extra: dict[str, Any]) -> None:
        extra["referee"] = Referee.widened_state(extra["referee"])
        confident = extra.get("confident")
        if confident is not None:
            extra["confident"] = {
                "n": [0.0, *confident["n"]],
                "c": [0.0] * len(THRESHOLDS) + list(confident["c"]),
            }

    def _load_extra(self, extra: Mapping[str, Any]) -> None:
        total = extra["total"]
        if not (isinstance(total, numbers.Real) and 0 <= total < math.inf):
            raise ValueError(f"total should be a finite number >= 0, got {total!r}")
        self._total = float(total)
        self.referee = Referee.from_state(self.n_arms - 1, extra["referee"])
        self._pending_audit = bool(extra["pending_audit"])
        confident = extra.get("confident")  # absent in states saved before thresholds
        if confident is not None:
            for key, size in (("n", len(self._cn)), ("c", len(self._c))):
                values = confident[key]
                if not (
                    isinstance(values, list)
                    and len(values) == size
                    and all(_is_count(v) for v in values)
                ):
                    raise ValueError(f"confident.{key} should be {size} finite counts >= 0")
            if any(
                x > confident["n"][i // len(THRESHOLDS)] * (1 + 1e-9)
                for i, x in enumerate(confident["c"])
            ):
                raise ValueError("confident: more confident samples than samples")
            self._cn = [float(v) * self._w for v in confident["n"]]
            self._c = [float(v) * self._w for v in confident["c"]]

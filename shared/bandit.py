"""Split-selection policies: I-SplitEE (UCB with side observations), a discounted variant for
changing scenes, and the baselines they are judged against. Pure logic: no I/O, no torch.

Which rule is which spec (:func:`build_policy`): ``isplitee`` and ``isplitee-nonstationary``
are the audited policy (:class:`shared.referee.AuditedSplitEE`): exits answer only while audits
show they agree with the final classifier. ``isplitee-paper`` (and
``isplitee-paper-nonstationary``) is the paper's rule described below, which trusts
confidence; ``offload-all`` offloads every frame at the cheapest split.

Arms are indices 0..K-1 into the model's exits, shallowest first; the last arm is the final
classifier (the whole network on the device). Build a policy with :func:`build_policy`.

Deciding and learning are two calls because on a device they happen at different times: C_L
of an offloaded sample is known only when the cloud replies (or never). Each
:meth:`Policy.decide` hands out a :class:`Decision`; exactly one :meth:`Policy.observe` or
:meth:`Policy.cancel` follows it. ``observe`` takes an :class:`~shared.cost.Observation`:
the confidences of the exits the device computed (0..arm) and C_L when it was revealed.

What is learnt is what was observed, never a reward: per arm, how often its exit is confident,
its confidence when it is, and C_L when it is not (the statistics below). Each decision prices
them with the *current* :class:`~shared.cost.RewardModel`, so :meth:`Policy.set_rewards` (a
node that measured a slower link) changes the very next decision without forgetting anything.

The estimate, and why it is consistent
--------------------------------------
For an arm j that is not the last, with p_j = P(C_j >= alpha)::

    E[r_j] = E[C_j 1{C_j >= alpha}] + (1 - p_j) E[C_L | C_j < alpha]
             - mu (edge_j + (1 - p_j) offload_j)

``E[C_j 1{C_j >= alpha}]`` and ``p_j`` are averages over every sample that computed exit j
(the chosen arm was j or deeper). Whether a sample computes exit j is decided before the sample
is seen, so by Doob's optional-skipping theorem those samples are i.i.d. draws of the stream
(in a stationary world) and the averages converge to the true values; ``s/n`` is unbiased for
the first term at every n.

``E[C_L | C_j < alpha]`` is averaged only over samples with C_j < alpha whose C_L was revealed
by a rule that looked at nothing but the decision and C_j itself: the chosen arm was j (it
offloaded *because* C_j < alpha), the last arm (C_L computed on the device), or an audit
(offloaded regardless). Such samples are distributed as the stream given C_j < alpha, so the
average converges to the conditional mean. A sample that chose a deeper arm i and offloaded
revealed C_L because C_i < alpha too: it is drawn given *both* exits unsure — harder images,
lower C_L — and is left out of arm j's censored part. (The paper's update did the converse
mistake: it skipped arm j's would-be offloads when the deeper exit answered, and those are
exactly arm j's worst outcomes, so arm j was overrated.) The plug-in of consistent parts is
consistent; the last arm's mean is the average C_L over samples where C_L was revealed
independently of the exits (last arm or audit).

Two assumptions are the caller's: an audit is drawn without looking at the frame's
confidences (e.g. every k-th frame, or at random), and whether the cloud's reply is lost does
not depend on C_L. Under them the estimate of every arm converges to its true mean, whichever
arms the policy happens to play; ``tests/test_bandit_properties.py`` checks it against the true
means on random correlated tables.

Exploration
-----------
The three means an arm's reward is made of are each observed values in [0, 1]: the offload
share q_j = 1 - p_j (over the n samples that computed exit j), the confidence when exiting
(over the exits) and C_L when unsure (over the m censored samples). Each gets an
empirical-Bernstein interval (UCB-V, Audibert, Munos & Szepesvari 2009) with t the number of
decisions::

    mean +- c * (sqrt(2 V ln t / count) + 3 ln t / count)

V the sample variance and count the samples the mean rests on (both discounted in the
non-stationary variant); each interval is clipped to [0, 1]. An arm's upper bound is the highest
reward the formula above gives with every mean inside its interval (the upper ends of the two
confidences, the end of q's interval that favours the arm), minus the priced costs. The reward is
the same function of the same intervals under any cost model, so ``c`` means the same confidence
under the paper's costs and measured ones: an offload that costs 14 makes q's interval matter 14
times more, as it should (docs/results.md sweeps c under both). A mean with no sample yet has
interval [0, 1].

The arm with the highest upper bound, j, is the one worth learning about; what is played is the
cheapest arm that teaches it, because side observations make deeper arms informative too:

1. j is the last arm: play it.
2. Optimism about C_L is what puts j on top (its bound with C_L at its estimate, 0 when unseen,
   falls below the runner-up's bound): only j itself reveals C_L given C_j < alpha, so play j.
3. Otherwise j's uncertainty is in its exit statistics, which every arm from j on reveals: play
   the one among j..K-1 whose reward has the highest posterior mean (uniform priors, so a split
   seen once does not look as if it never offloads; ties to the deeper).

Under the measured cost, where an offload costs several times the whole network, this is what
keeps the policy from trying a shallow split on live frames to learn its exit rate when a deeper
one (often the best) shows the same. An arm never observed at all goes first, deepest first:
the last arm reveals every exit and C_L at once, so one play of it gives every arm its first
sample. Which arm is played never changes what a sample feeds, so the estimates stay consistent.
"""

from __future__ import annotations

import math
import numbers
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from shared.cost import Observation, RewardModel
from shared.errors import IsplitEEError
from shared.protocol import FRAME_BLOCK

__all__ = [
    "POLICY_SPECS",
    "BanditError",
    "Decision",
    "DiscountedUCB",
    "FixedSplit",
    "ISplitEE",
    "OffloadAll",
    "Policy",
    "RandomSplit",
    "build_policy",
    "policy_from_state",
    "with_first_arm",
]

STATE_VERSION = 3
_DELETE_HINT = "delete the state file to start learning afresh"
_STATS = ("n", "e", "s", "s2", "m", "f", "f2")


class BanditError(IsplitEEError):
    """A policy was misused (unknown or settled decision, invalid observation) or its saved
    state cannot be used."""


@dataclass(frozen=True, slots=True)
class Decision:
    """One choice of split. ``id`` ties the later observation to it.

    ``audit``: offload this frame even if its exit is confident, publish the cloud's answer,
    and observe it with ``Observation(audit=True)`` (never set for the last arm).
    ``threshold``: the confidence at which the chosen exit answers, when the policy wants a
    stricter one than its alpha (the audited policy's per-exit thresholds); None: alpha.
    """

    id: int
    arm: int
    audit: bool = False
    threshold: float | None = None

    def answers(self, confidence: float, alpha: float) -> bool:
        """Whether the chosen exit answers a frame it is ``confidence`` sure of (the caller
        still offloads an audit and answers the last arm)."""
        return confidence >= (alpha if self.threshold is None else self.threshold)


def _is_index(x: object) -> bool:
    return type(x) is int or (isinstance(x, numbers.Integral) and not isinstance(x, bool))


def _is_unit(x: object) -> bool:
    """A real number in [0, 1] (NaN fails the comparison; bools are not confidences)."""
    if type(x) is not float and (isinstance(x, bool) or not isinstance(x, numbers.Real)):
        return False
    return 0.0 <= x <= 1.0  # type: ignore[operator]


class Policy(ABC):
    """Common part: decisions, validation, the statistics of what was observed, JSON state.

    Every policy keeps the statistics (cheap), so a fixed split or a random one can still
    report what each arm would earn. Per arm j, weighted by the policy's discount (1 when
    none): ``n`` samples that computed exit j, ``e`` of them with C_j >= alpha, ``s``/``s2``
    the sum of C_j / C_j**2 over those, ``m`` samples with C_j < alpha whose C_L was revealed
    independently of the deeper exits, ``f``/``f2`` the sum of C_L / C_L**2 over those. For the
    last arm ``n = m`` counts the samples whose C_L was revealed independently of every exit.
    """

    name: ClassVar[str]

    def __init__(self, rewards: RewardModel) -> None:
        if not isinstance(rewards, RewardModel):
            raise TypeError(f"rewards should be a RewardModel, got {type(rewards).__name__}")
        self.n_arms = rewards.n_arms
        self.rounds = 0
        self.audits = 0
        self._next_id = 0
        self._pending: dict[int, Decision] = {}  # handed out, not yet observed or cancelled
        k = self.n_arms
        self._n, self._e, self._s, self._s2 = [0.0] * k, [0.0] * k, [0.0] * k, [0.0] * k
        self._m, self._f, self._f2 = [0.0] * k, [0.0] * k, [0.0] * k
        # Discounting without touching every statistic each round: stored values are the true
        # ones times ``_w``, and a new observation is added with weight ``_w``.
        self._w = 1.0
        self._cache: list[tuple[float, ...] | None] = [None] * k
        self._fresh = [False] * k
        self._rewards = rewards

    # -- costs ------------------------------------------------------------------------------------
    @property
    def rewards(self) -> RewardModel:
        """The cost model and reward rule decisions are priced with."""
        return self._rewards

    def set_rewards(self, rewards: RewardModel) -> None:
        """Price the next decisions with new costs or mu; what was learnt is kept.

        The statistics are about images, not costs, so they keep their meaning. alpha is not
        a price: it decides which samples exit, so the statistics were gathered for one alpha
        and a new one needs a new policy.
        """
        if not isinstance(rewards, RewardModel):
            raise TypeError(f"rewards should be a RewardModel, got {type(rewards).__name__}")
        if rewards.n_arms != self.n_arms:
            raise BanditError(
                f"the new cost model has {rewards.n_arms} arms, this policy {self.n_arms}"
            )
        if rewards.alpha != self._rewards.alpha:
            raise BanditError(
                f"alpha cannot change under a running policy ({self._rewards.alpha:g} -> "
                f"{rewards.alpha:g}): what it learnt was split at the old threshold; build a "
                "new policy"
            )
        self._rewards = rewards
        self._fresh = [False] * self.n_arms

    # -- the calls --------------------------------------------------------------------------------
    def decide(self) -> Decision:
        """Choose the split for the next sample."""
        self.rounds += 1
        self._on_round()
        arm = self._choose()
        audit = arm != self.n_arms - 1 and self._audit(arm)
        self.audits += audit
        threshold = None if audit else self._threshold(arm)
        decision = Decision(self._next_id, arm, audit, threshold)
        self._next_id += 1
        self._pending[decision.id] = decision
        return decision

    def observe(self, decision: Decision | int, obs: Observation) -> None:
        """Settle a decision with what its sample revealed.

        The observation is checked first (one confidence per exit 0..arm, each in [0, 1]; C_L
        given when the arm is the last, and then equal to its confidence; no C_L after a
        confident exit unless it was an audit); a bad one raises :class:`BanditError`, learns
        nothing and leaves the decision open. An offload whose reply never came can be observed
        with ``final_confidence=None``: the exits it computed still count (better than
        :meth:`cancel` when the exits were computed, as dropping only unanswered offloads
        would favour images that exit).
        """
        did, arm = self._open(decision)
        conf, final = self._check(did, arm, obs)
        del self._pending[did]
        self._learn(arm, conf, final, obs.audit)
        self._observed(arm, obs)

    def cancel(self, decision: Decision | int) -> None:
        """Settle a decision learning nothing (e.g. the frame was dropped before the edge ran)."""
        did, _ = self._open(decision)
        del self._pending[did]

    @property
    def audit_rate(self) -> float:
        """Share of decisions that were audits (offloaded whatever the exit's confidence)."""
        return self.audits / self.rounds if self.rounds else 0.0

    @property
    def pending(self) -> int:
        """Decisions handed out and neither observed nor cancelled."""
        return len(self._pending)

    def _open(self, decision: Decision | int) -> tuple[int, int]:
        """The id and arm of a decision still waiting for its observation."""
        if isinstance(decision, Decision):
            did = decision.id
        elif _is_index(decision):
            did = int(decision)  # type: ignore[arg-type]
        else:
            raise BanditError(f"a decision is a Decision or its id, got {decision!r}")
        pending = self._pending.get(did)
        if pending is None:
            state = "was already settled" if 0 <= did < self._next_id else "was never made"
            raise BanditError(f"decision {did} {state}: each decision is settled once")
        arm = pending.arm
        if isinstance(decision, Decision) and decision.arm != arm:
            raise BanditError(f"decision {did} chose arm {arm}, not {decision.arm}")
        return did, arm

    def _check(self, did: int, arm: int, obs: Observation) -> tuple[Any, float | None]:
        if not isinstance(obs, Observation):
            raise BanditError(
                f"decision {did}: observe takes an Observation, got {type(obs).__name__}"
            )
        conf = obs.confidences
        if not isinstance(conf, tuple | list) or len(conf) != arm + 1:
            got = len(conf) if isinstance(conf, tuple | list) else repr(conf)
            raise BanditError(
                f"decision {did} chose arm {arm}: it computes {arm + 1} exit confidences "
                f"(exits 0..{arm}), got {got}"
            )
        for j, x in enumerate(conf):
            if not _is_unit(x):
                raise BanditError(
                    f"decision {did}: confidence of exit {j} should be a number in [0, 1], "
                    f"got {x!r}"
                )
        final = obs.final_confidence
        if final is not None and not _is_unit(final):
            raise BanditError(
                f"decision {did}: final_confidence should be a number in [0, 1] or None, "
                f"got {final!r}"
            )
        last = self.n_arms - 1
        if arm == last:
            if final is None or not math.isclose(final, conf[-1], rel_tol=0, abs_tol=1e-9):
                raise BanditError(
                    f"decision {did} ran the whole network (arm {arm}): final_confidence is "
                    f"its last exit's confidence {conf[-1]!r}, got {final!r}"
                )
        elif (
            final is not None
            and not obs.audit
            and (pending := self._pending[did]).answers(conf[arm], self._rewards.alpha)
        ):
            threshold = self._rewards.alpha if pending.threshold is None else pending.threshold
            raise BanditError(
                f"decision {did}: exit {arm} was confident ({conf[arm]:g} >= its threshold "
                f"{threshold:g}), so nobody computed C_L; pass audit=True if the frame was "
                "offloaded anyway"
            )
        if type(obs.audit) is not bool:
            raise BanditError(f"decision {did}: audit should be a bool, got {obs.audit!r}")
        classes, final_class = obs.classes, obs.final_class
        if classes is not None and not (
            isinstance(classes, tuple | list)
            and len(classes) == arm + 1
            and all(_is_index(x) for x in classes)
        ):
            raise BanditError(
                f"decision {did}: classes should be {arm + 1} integers (exits 0..{arm}) or "
                f"None, got {classes!r}"
            )
        if final_class is not None:
            if not _is_index(final_class):
                raise BanditError(
                    f"decision {did}: final_class should be an integer or None, got {final_class!r}"
                )
            if final is None:
                raise BanditError(
                    f"decision {did}: final_class given without final_confidence: both come "
                    "from the final classifier"
                )
            if arm == last and classes is not None and classes[-1] != final_class:
                raise BanditError(
                    f"decision {did} ran the whole network: final_class is its last exit's "
                    f"class {classes[-1]!r}, got {final_class!r}"
                )
        return conf, None if final is None else float(final)

    def _learn(self, arm: int, conf: Any, final: float | None, audit: bool) -> None:
        last = self.n_arms - 1
        alpha = self._rewards.alpha
        if self._rewards.cost.blocks[0] == FRAME_BLOCK:  # an exit that never answers, even
            conf = (-1.0, *conf[1:])  # at alpha 0: below any threshold
        w = self._w
        independent = arm == last or audit
        n, e, s, s2, m, f, f2 = self._n, self._e, self._s, self._s2, self._m, self._f, self._f2
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
    def _terms(self, j: int) -> tuple[float, ...] | None:
        """What arm j's index needs, from the statistics and the current costs.

        ``(q, e_mean, g, edge, off, aq, bq, ae, be, ag, bg)``: offload share, mean confidence
        when exiting, mean C_L when unsure (-1: no sample yet), the priced edge and offload
        costs, and for each of the three observed means the coefficients of its bonus (in
        stored units, see ``_w``). None: never observed.
        """
        if self._fresh[j]:
            return self._cache[j]
        self._fresh[j] = True
        n = self._n[j]
        if n <= 0.0:
            self._cache[j] = None
            return None
        rm = self._rewards
        edge = rm.mu * rm.cost.edge[j]
        m = self._m[j]
        if m > 0.0:
            g = self._f[j] / m
            ag, bg = math.sqrt(2.0 * max(self._f2[j] / m - g * g, 0.0) / m), 3.0 / m
        else:
            g, ag, bg = -1.0, 0.0, 0.0
        if j == rm.last:
            terms = (1.0, 0.0, g, edge, 0.0, 0.0, 0.0, 0.0, 0.0, ag, bg)
        else:
            e = self._e[j]
            q = (n - e) / n
            aq, bq = math.sqrt(2.0 * q * (1.0 - q) / n), 3.0 / n
            if e > 0.0:
                e_mean = self._s[j] / e
                ae = math.sqrt(2.0 * max(self._s2[j] / e - e_mean * e_mean, 0.0) / e)
                be = 3.0 / e
            else:
                e_mean, ae, be = -1.0, 0.0, 0.0
            off = rm.mu * rm.cost.offload[j]
            terms = (q, e_mean, g, edge, off, aq, bq, ae, be, ag, bg)
        self._cache[j] = terms
        return terms

    def _index(self, c: float, log_t: float) -> int:
        """The arm to play: which statistic to learn, then the cheapest arm that reveals it
        (module docstring, Exploration).

        Each observed mean gets an interval; the reward ``(1-q) e + q (g - off) - edge`` grows
        with e and g and is linear in q, so its maximum over the intervals is at e and g's
        upper ends and one of q's.
        """
        w = self._w
        root = math.sqrt(w * log_t) * c  # the stored sums are scaled by w, see _on_round
        lin = w * log_t * c
        k = self.n_arms
        upper, upper_at_g, score = [0.0] * k, [0.0] * k, [0.0] * k
        best, best_index = k - 1, -math.inf
        for j in range(k - 1, -1, -1):
            t = self._terms(j)
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
            score[j] = self._posterior_mean(j, edge, off)
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

    def _posterior_mean(self, j: int, edge: float, off: float) -> float:
        """Arm j's reward with each observed mean replaced by its posterior mean under a
        uniform prior (one pseudo-sample at 1/2, two for the offload share): a split seen on
        a single confident sample must not look as if it never offloads."""
        w = self._w
        g = (self._f[j] + 0.5 * w) / (self._m[j] + w)
        if j == self.n_arms - 1:
            return g - edge
        n, e = self._n[j], self._e[j]
        q = (n - e + w) / (n + 2.0 * w)
        e_mean = (self._s[j] + 0.5 * w) / (e + w)
        return (1.0 - q) * e_mean + q * (g - off) - edge

    def estimates(self) -> list[float | None]:
        """Estimated mean reward of each arm under the current costs (None: not enough seen)."""
        out: list[float | None] = []
        for j in range(self.n_arms):
            t = self._terms(j)
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

    def arm_stats(self) -> list[dict[str, Any]]:
        """Per arm: block, count (discounted when the policy discounts), estimated mean reward
        under the current costs, exit rate, mean confidence when exiting, the censored
        part (samples and mean C_L when the exit is unsure), and for an audited policy the
        exit's agreement with the final classifier on audits and whether it may answer
        (None otherwise). JSON-ready."""
        w = self._w
        out = []
        for j, (block, mean) in enumerate(
            zip(self._rewards.cost.blocks, self.estimates(), strict=True)
        ):
            n, e, m = self._n[j], self._e[j], self._m[j]
            last = j == self.n_arms - 1
            out.append(
                {
                    "block": block,
                    "count": n / w,
                    "mean_reward": mean,
                    "exit_rate": None if last or n <= 0 else e / n,
                    "exit_confidence": self._s[j] / e if e > 0 else None,
                    "censored_count": m / w,
                    "final_confidence_when_unsure": self._f[j] / m if m > 0 else None,
                    "agreement": None,
                    "trusted": None,
                }
            )
        return out

    # -- what each policy defines -----------------------------------------------------------------
    @abstractmethod
    def _choose(self) -> int: ...

    def _audit(self, arm: int) -> bool:
        """Whether the decision just chosen (a split that is not the last) is an audit."""
        return False

    def _threshold(self, arm: int) -> float | None:
        """A stricter exit threshold than alpha for the decision just chosen (None: alpha)."""
        return None

    def _extra_sums(self) -> tuple[list[float], ...]:
        """A subclass's own sums stored times ``_w``, renormalised with the statistics."""
        return ()

    def _observed(self, arm: int, obs: Observation) -> None:  # noqa: B027
        """Called after the statistics learnt a valid observation (the referee's hook)."""

    def _on_round(self) -> None:  # noqa: B027 - only the discounted policy needs it
        """Called once per decision, before choosing."""

    @property
    @abstractmethod
    def spec(self) -> str:
        """The :func:`build_policy` spec of this policy."""

    def _params(self) -> dict[str, Any]:
        return {}

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra(self, extra: Mapping[str, Any]) -> None:  # noqa: B027
        pass

    @classmethod  # noqa: B027 - only classes that keep something per arm override it
    def _widen(cls, params: dict[str, Any], extra: dict[str, Any]) -> None:
        """:func:`with_first_arm` for what this class keeps per arm in params and extra."""

    # -- persistence ------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """JSON-ready state; :func:`policy_from_state` restores a policy that decides the same."""
        w = self._w
        stats = {
            key: [v / w for v in getattr(self, f"_{key}")] for key in _STATS
        }  # true (discounted) values
        return {
            "version": STATE_VERSION,
            "policy": self.name,
            "n_arms": self.n_arms,
            "alpha": self._rewards.alpha,
            "params": self._params(),
            "rounds": self.rounds,
            "audits": self.audits,
            "next_id": self._next_id,
            "pending": [
                [d.id, d.arm] if d.threshold is None else [d.id, d.arm, d.threshold]
                for d in self._pending.values()
            ],
            "stats": stats,
            "extra": self._extra_state(),
        }

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}(n_arms={self.n_arms}{', ' if params else ''}{params})"


class ISplitEE(Policy):
    """I-SplitEE: UCB over the splits with side observations, on consistent estimates.

    Every sample updates every exit it computed (see the module docstring for what feeds which
    part); each decision finds the arm with the highest upper confidence bound with horizon
    t = the number of decisions, and plays it or the cheapest arm that reveals the same
    statistics (module docstring, Exploration). ``c`` scales the intervals (empirical
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

    def _params(self) -> dict[str, Any]:
        return {"c": self.c}


class DiscountedUCB(ISplitEE):
    """I-SplitEE with discounting (D-UCB, Garivier & Moulines 2011) for scenes that change.

    Every round all statistics shrink by ``discount``, so an observation made k rounds ago
    weighs ``discount**k``: the policy remembers about ``1 / (1 - discount)`` rounds, and its
    horizon is that discounted number of rounds. Chosen over a sliding window because it needs
    O(arms) state (the same seven sums per arm as I-SplitEE, discounted alike), which keeps the
    device's JSON state small, and because late (offload) observations simply add weight where
    a window would have to place them in its history. An arm left alone sees its counts decay
    and its bonus grow, so it is re-tried after a change.

    Its counts never grow past about ``1 / (1 - discount)``, so its bonus never fades as
    UCB's does. Its default c is I-SplitEE's recommended one; docs/results.md sweeps c for
    I-SplitEE only, and reports this variant at the default on its schedules.
    """

    name = "isplitee-paper-nonstationary"
    DEFAULT_C: ClassVar[float] = 0.25
    DEFAULT_DISCOUNT: ClassVar[float] = 0.995

    def __init__(
        self, rewards: RewardModel, *, c: float | None = None, discount: float | None = None
    ) -> None:
        super().__init__(rewards, c=c)
        discount = self.DEFAULT_DISCOUNT if discount is None else discount
        if not (isinstance(discount, numbers.Real) and 0.0 < discount < 1.0):
            raise ValueError(f"discount should be in (0, 1), got {discount!r}")
        self.discount = float(discount)
        self._total = 0.0  # discounted number of rounds: sum of discount**k

    def _on_round(self) -> None:
        self._total = _discount_round(self, self.discount, self._total)

    def _horizon(self) -> float:
        return max(self._total, 1.0)

    def _params(self) -> dict[str, Any]:
        return {"c": self.c, "discount": self.discount}

    def _extra_state(self) -> dict[str, Any]:
        return {"total": self._total}

    def _load_extra(self, extra: Mapping[str, Any]) -> None:
        total = extra["total"]
        if not (isinstance(total, numbers.Real) and 0 <= total < math.inf):
            raise ValueError(f"total should be a finite number >= 0, got {total!r}")
        self._total = float(total)


def _discount_round(policy: Policy, discount: float, total: float) -> float:
    """One round of discounting (shared by the discounted policies); returns the new discounted
    number of rounds."""
    policy._w /= discount
    if policy._w > 1e100:  # renormalise before the stored sums overflow
        for stored in (*(getattr(policy, f"_{key}") for key in _STATS), *policy._extra_sums()):
            stored[:] = [v / policy._w for v in stored]
        policy._w = 1.0
        policy._fresh = [False] * policy.n_arms
    return total * discount + 1.0


class FixedSplit(Policy):
    """Always the same arm: the fixed-split baseline, ``final`` (last arm) and the oracle."""

    name = "fixed"

    def __init__(self, rewards: RewardModel, *, arm: int, label: str | None = None) -> None:
        super().__init__(rewards)
        if not (_is_index(arm) and 0 <= arm < self.n_arms):
            raise ValueError(f"arm should be in 0..{self.n_arms - 1}, got {arm!r}")
        self.arm = int(arm)
        self.label = label

    @property
    def spec(self) -> str:
        return self.label or f"fixed:{self._rewards.cost.blocks[self.arm]}"

    def _choose(self) -> int:
        return self.arm

    def _params(self) -> dict[str, Any]:
        return {"arm": self.arm, "label": self.label}

    @classmethod
    def _widen(cls, params: dict[str, Any], extra: dict[str, Any]) -> None:
        params["arm"] += 1


class OffloadAll(Policy):
    """Offload every frame at the cheapest split (edge + offload), whatever its exit says.

    The baseline early exits must earn their place against: under the paper's costs it
    offloads at block 3 for 0.3 + 0.5 = 0.8 of the whole network's 1.9 (a 57.9 % cut) at
    the final layer's accuracy. Every decision is an audit, so on a node it is also a way to
    run a camera with the cloud's answers only while its referee statistics accumulate.
    """

    name = "offload-all"

    @property
    def spec(self) -> str:
        return self.name

    def _choose(self) -> int:
        cost = self._rewards.cost
        k = self.n_arms - 1
        if k == 0:
            return 0
        return min(range(k), key=lambda j: (cost.edge[j] + cost.offload[j], j))

    def _audit(self, arm: int) -> bool:
        return True


class RandomSplit(Policy):
    """A uniformly random arm each round."""

    name = "random"

    def __init__(self, rewards: RewardModel, *, seed: int = 0) -> None:
        super().__init__(rewards)
        if not _is_index(seed):
            raise ValueError(f"seed should be an integer, got {seed!r}")
        self.seed = int(seed)
        self._rng = random.Random(self.seed)

    @property
    def spec(self) -> str:
        return self.name

    def _choose(self) -> int:
        return self._rng.randrange(self.n_arms)

    def _params(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def _extra_state(self) -> dict[str, Any]:
        version, internal, gauss = self._rng.getstate()
        return {"rng": [version, list(internal), gauss]}

    def _load_extra(self, extra: Mapping[str, Any]) -> None:
        version, internal, gauss = extra["rng"]
        self._rng.setstate((version, tuple(internal), gauss))


def _registry() -> dict[str, type[Policy]]:
    from shared.referee import AuditedSplitEE  # it builds on this module

    classes = (ISplitEE, DiscountedUCB, FixedSplit, OffloadAll, RandomSplit, AuditedSplitEE)
    return {cls.name: cls for cls in classes}


POLICY_SPECS = (
    "isplitee",
    "isplitee-nonstationary",
    "isplitee-paper",
    "isplitee-paper-nonstationary",
    "offload-all",
    "fixed:BLOCK",
    "final",
    "random",
)
_EXPLORES = POLICY_SPECS[:4]
_DISCOUNTS = ("isplitee-nonstationary", "isplitee-paper-nonstationary")
_AUDITED = ("isplitee", "isplitee-nonstationary")


def build_policy(
    spec: str,
    rewards: RewardModel,
    *,
    c: float | None = None,
    discount: float | None = None,
    target: float | None = None,
    min_audit_rate: float | None = None,
    seed: int = 0,
) -> Policy:
    """The policy named by ``spec`` for a reward model.

    ``spec``: ``isplitee`` (audited, the recommended policy) | ``isplitee-nonstationary``
    (audited, its statistics discounted) | ``isplitee-paper`` (the paper's confidence reward)
    | ``isplitee-paper-nonstationary`` | ``offload-all`` | ``fixed:BLOCK`` (BLOCK one of the
    cost model's blocks) | ``final`` | ``random``. ``c``, ``discount``, ``target`` (the
    largest share of frames an exit may answer differently from the final classifier) and
    ``min_audit_rate`` default to the policy's own; giving one to a policy that has no such
    setting is an error, not ignored.
    """
    blocks = rewards.cost.blocks
    if c is not None and spec not in _EXPLORES:
        raise ValueError(f"policy {spec!r} does not explore: c applies to isplitee policies only")
    if discount is not None and spec not in _DISCOUNTS:
        raise ValueError(
            f"policy {spec!r} does not discount: discount applies to {' and '.join(_DISCOUNTS)}"
        )
    for name, value in (("target", target), ("min_audit_rate", min_audit_rate)):
        if value is not None and spec not in _AUDITED:
            raise ValueError(
                f"policy {spec!r} has no referee: {name} applies to {' and '.join(_AUDITED)}"
            )
    if spec in _AUDITED:
        from shared.referee import AuditedSplitEE

        if spec == "isplitee-nonstationary" and discount is None:
            discount = AuditedSplitEE.DEFAULT_DISCOUNT
        return AuditedSplitEE(
            rewards, c=c, discount=discount, target=target, min_audit_rate=min_audit_rate
        )
    if spec == "isplitee-paper":
        return ISplitEE(rewards, c=c)
    if spec == "isplitee-paper-nonstationary":
        return DiscountedUCB(rewards, c=c, discount=discount)
    if spec == "offload-all":
        return OffloadAll(rewards)
    if spec == "final":
        return FixedSplit(rewards, arm=rewards.last, label="final")
    if spec == "random":
        return RandomSplit(rewards, seed=seed)
    if isinstance(spec, str) and spec.startswith("fixed:"):
        text = spec.partition(":")[2]
        if text.strip().isdigit() and int(text) in blocks:
            return FixedSplit(rewards, arm=blocks.index(int(text)), label=spec)
        raise ValueError(
            f"policy {spec!r}: BLOCK should be one of the model's blocks {list(blocks)}"
        )
    raise ValueError(f"unknown policy {spec!r}: use one of {', '.join(POLICY_SPECS)}")


def _load(state: Mapping[str, Any], rewards: RewardModel) -> Policy:
    if not isinstance(state, Mapping):
        raise ValueError(f"state should be a mapping, got {type(state).__name__}")
    if state["version"] != STATE_VERSION:
        raise BanditError(
            f"bandit state version {state['version']!r} is not supported "
            f"(expected {STATE_VERSION}); {_DELETE_HINT}"
        )
    cls = _registry().get(state["policy"])
    if cls is None:
        raise ValueError(f"unknown policy {state['policy']!r}")
    k = state["n_arms"]
    if k != rewards.n_arms:
        raise ValueError(f"the state has {k!r} arms, the model {rewards.n_arms}")
    if state["alpha"] != rewards.alpha:
        raise ValueError(
            f"the state was learnt with alpha {state['alpha']!r}, the node uses {rewards.alpha!r}"
        )
    params = state["params"]
    if not isinstance(params, Mapping):
        raise ValueError("params should be a mapping")
    policy = cls(rewards, **params)
    rounds, next_id, audits = state["rounds"], state["next_id"], state["audits"]
    if not (_is_index(rounds) and _is_index(next_id) and rounds >= 0 and next_id >= 0):
        raise ValueError(f"rounds and next_id should be integers >= 0, got {rounds!r}, {next_id!r}")
    if not (_is_index(audits) and 0 <= audits <= rounds):
        raise ValueError(f"audits should be an integer in 0..rounds, got {audits!r}")
    policy.audits = int(audits)
    pending: dict[int, Decision] = {}
    for item in state["pending"]:
        did, arm, *rest = item
        if not (_is_index(did) and 0 <= did < next_id and _is_index(arm) and 0 <= arm < k):
            raise ValueError(
                f"pending decision {item!r} is outside ids 0..{next_id - 1} / arms 0..{k - 1}"
            )
        if int(did) in pending:
            raise ValueError(f"pending decision {did!r} appears twice")
        threshold = None
        if rest:
            (threshold,) = rest
            if not (_is_unit(threshold) and threshold > rewards.alpha):
                raise ValueError(
                    f"pending decision {item!r}: a threshold is a number in (alpha, 1]"
                )
            threshold = float(threshold)
        # the audit flag is not kept: once the decision is out, only its arm and threshold
        # are checked against the observation
        pending[int(did)] = Decision(int(did), int(arm), threshold=threshold)
    stats = state["stats"]
    for key in _STATS:
        values = stats[key]
        if not (
            isinstance(values, list)
            and len(values) == k
            and all(_is_number(v) and 0 <= v < math.inf for v in values)
        ):
            raise ValueError(f"stats.{key} should be {k} finite numbers >= 0, got {values!r}")
    policy.rounds, policy._next_id, policy._pending = int(rounds), int(next_id), pending
    for key in _STATS:
        setattr(policy, f"_{key}", [float(v) for v in stats[key]])
    for j in range(k):
        n, e, m = policy._n[j], policy._e[j], policy._m[j]
        if e > n * (1 + 1e-9) or m > n * (1 + 1e-9):
            raise ValueError(f"stats of arm {j} are inconsistent: n {n}, e {e}, m {m}")
    policy._load_extra(state["extra"])
    return policy


def with_first_arm(state: Mapping[str, Any]) -> dict[str, Any]:
    """A saved state with one more arm in front, never observed: what a node that learnt
    without frame offload restores from when it gains the frame arm (block 0). Everything
    learnt about the model's exits is kept; decisions in flight are dropped."""
    out = dict(state)
    cls = _registry().get(state.get("policy"))
    if cls is None or not _is_index(state.get("n_arms")):
        raise BanditError(f"invalid bandit state (policy {state.get('policy')!r}); {_DELETE_HINT}")
    out["n_arms"] = state["n_arms"] + 1
    out["pending"] = []
    try:
        out["stats"] = {key: [0.0, *state["stats"][key]] for key in _STATS}
        params, extra = dict(state["params"]), dict(state["extra"])
        cls._widen(params, extra)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BanditError(
            f"invalid bandit state ({type(exc).__name__}: {exc}); {_DELETE_HINT}"
        ) from exc
    out["params"], out["extra"] = params, extra
    return out


def _is_number(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def policy_from_state(state: Mapping[str, Any], rewards: RewardModel) -> Policy:
    """Rebuild a policy from :meth:`Policy.to_state` output (e.g. read back from JSON), priced
    with ``rewards``. Anything wrong with the state is a :class:`BanditError`, raised here
    rather than at a later decision."""
    try:
        return _load(state, rewards)
    except BanditError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise BanditError(
            f"invalid bandit state ({type(exc).__name__}: {exc}); {_DELETE_HINT}"
        ) from exc

"""The policy base: decisions handed out and settled, the statistics, the JSON state.

Deciding and learning are two calls because on a device they happen at different times: C_L
of an offloaded sample is known only when the cloud replies (or never). Each
:meth:`Policy.decide` hands out a :class:`~shared.policy.decision.Decision`; exactly one
:meth:`Policy.observe` or :meth:`Policy.cancel` follows it. A policy overrides only how it
chooses (and, where it has any, its own parameters and extra state).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from shared.cost import Observation, RewardModel
from shared.policy.checks import is_index
from shared.policy.decision import BanditError, Decision
from shared.policy.observation import check_observation
from shared.policy.state import STATE_VERSION, PolicyState
from shared.policy.stats import ArmStats
from shared.protocol import FRAME_BLOCK

__all__ = ["Policy"]


class Policy(ABC):
    """Common part: decisions, validation, the statistics of what was observed, JSON state.

    Every policy keeps the statistics (cheap, :class:`~shared.policy.stats.ArmStats`), so a
    fixed split or a random one can still report what each arm would earn.
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
        self.stats = ArmStats(self.n_arms)
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
        self.stats.stale()

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

        A bad observation (:func:`~shared.policy.observation.check_observation`) raises
        :class:`BanditError`, learns nothing and leaves the decision open. An offload whose
        reply never came can be observed with ``final_confidence=None``: the exits it computed
        still count (better than :meth:`cancel` when the exits were computed, as dropping only
        unanswered offloads would favour images that exit).
        """
        pending = self._open(decision)
        alpha = self._rewards.alpha
        conf, final = check_observation(pending, obs, n_arms=self.n_arms, alpha=alpha)
        del self._pending[pending.id]
        arm = pending.arm
        if self._rewards.cost.blocks[0] == FRAME_BLOCK:  # an exit that never answers, even
            conf = (-1.0, *conf[1:])  # at alpha 0: below any threshold
        # every exit listed (an audit the cloud told the exits after the split): the sample
        # taught what the whole network on the device would have
        learnt = self.n_arms - 1 if len(conf) == self.n_arms else arm
        independent = learnt == self.n_arms - 1 or obs.audit
        self.stats.learn(learnt, conf, final, independent=independent, alpha=alpha)
        self._observed(arm, obs)

    def cancel(self, decision: Decision | int) -> None:
        """Settle a decision learning nothing (e.g. the frame was dropped before the edge ran)."""
        del self._pending[self._open(decision).id]

    @property
    def audit_rate(self) -> float:
        """Share of decisions that were audits (offloaded whatever the exit's confidence)."""
        return self.audits / self.rounds if self.rounds else 0.0

    @property
    def pending(self) -> int:
        """Decisions handed out and neither observed nor cancelled."""
        return len(self._pending)

    def _open(self, decision: Decision | int) -> Decision:
        """The decision as handed out, still waiting for its observation."""
        if isinstance(decision, Decision):
            did = decision.id
        elif is_index(decision):
            did = int(decision)  # type: ignore[arg-type]
        else:
            raise BanditError(f"a decision is a Decision or its id, got {decision!r}")
        pending = self._pending.get(did)
        if pending is None:
            state = "was already settled" if 0 <= did < self._next_id else "was never made"
            raise BanditError(f"decision {did} {state}: each decision is settled once")
        if isinstance(decision, Decision) and decision.arm != pending.arm:
            raise BanditError(f"decision {did} chose arm {pending.arm}, not {decision.arm}")
        return pending

    # -- what was learnt --------------------------------------------------------------------------
    def estimates(self) -> list[float | None]:
        """Estimated mean reward of each arm under the current costs (None: not enough seen)."""
        return self.stats.estimates(self._rewards)

    def arm_stats(self) -> list[dict[str, Any]]:
        """Per arm: block, count (discounted when the policy discounts), estimated mean reward
        under the current costs, exit rate, mean confidence when exiting, the censored
        part (samples and mean C_L when the exit is unsure), and for an audited policy the
        exit's agreement with the final classifier on audits and whether it may answer
        (None otherwise). JSON-ready."""
        st = self.stats
        w = st.w
        out = []
        for j, (block, mean) in enumerate(
            zip(self._rewards.cost.blocks, self.estimates(), strict=True)
        ):
            n, e, m = st.n[j], st.e[j], st.m[j]
            last = j == self.n_arms - 1
            out.append(
                {
                    "block": block,
                    "count": n / w,
                    "mean_reward": mean,
                    "exit_rate": None if last or n <= 0 else e / n,
                    "exit_confidence": st.s[j] / e if e > 0 else None,
                    "censored_count": m / w,
                    "final_confidence_when_unsure": st.f[j] / m if m > 0 else None,
                    "agreement": None,
                    "trusted": None,
                }
            )
        return out

    # -- what each policy defines -----------------------------------------------------------------
    @abstractmethod
    def _choose(self) -> int: ...

    @property
    @abstractmethod
    def spec(self) -> str:
        """The :func:`~shared.policy.registry.build_policy` spec of this policy."""

    def _audit(self, arm: int) -> bool:
        """Whether the decision just chosen (a split that is not the last) is an audit."""
        return False

    def _threshold(self, arm: int) -> float | None:
        """A stricter exit threshold than alpha for the decision just chosen (None: alpha)."""
        return None

    def _observed(self, arm: int, obs: Observation) -> None:  # noqa: B027
        """Called after the statistics learnt a valid observation (the referee's hook)."""

    def _on_round(self) -> None:  # noqa: B027 - only the discounted policies need it
        """Called once per decision, before choosing."""

    def params(self) -> dict[str, Any]:
        """The constructor's keyword arguments that rebuild this policy (saved with it)."""
        return {}

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra(self, extra: Mapping[str, Any]) -> None:  # noqa: B027
        """Restore what :meth:`_extra_state` saved (a bad value raises ValueError)."""

    @classmethod  # noqa: B027 - only classes that keep something per arm override it
    def widen(cls, params: dict[str, Any], extra: dict[str, Any]) -> None:
        """Give what this class keeps per arm in a saved state's ``params`` and ``extra`` one
        more arm in front, never observed (:func:`~shared.policy.registry.with_first_arm`)."""

    # -- persistence ------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """JSON-ready state; :func:`~shared.policy.registry.policy_from_state` restores a
        policy that decides the same."""
        return {
            "version": STATE_VERSION,
            "policy": self.name,
            "n_arms": self.n_arms,
            "alpha": self._rewards.alpha,
            "params": self.params(),
            "rounds": self.rounds,
            "audits": self.audits,
            "next_id": self._next_id,
            "pending": [
                [d.id, d.arm] if d.threshold is None else [d.id, d.arm, d.threshold]
                for d in self._pending.values()
            ],
            "stats": self.stats.to_state(),  # true (discounted) values
            "extra": self._extra_state(),
        }

    @classmethod
    def restore(cls, state: PolicyState, rewards: RewardModel) -> Self:
        """The policy a checked state describes, priced with ``rewards`` (a bad parameter or
        extra state raises ValueError or TypeError)."""
        policy = cls(rewards, **state.params)
        policy.rounds, policy.audits, policy._next_id = state.rounds, state.audits, state.next_id
        policy._pending = {d.id: d for d in state.pending}
        policy.stats.load(state.stats)
        policy._load_extra(state.extra)
        return policy

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}(n_arms={self.n_arms}{', ' if params else ''}{params})"

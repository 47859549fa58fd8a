"""Split-selection policies: I-SplitEE (UCB1 with side observations), a discounted variant for
changing scenes, and the baselines they are judged against. Pure logic: no I/O, no torch.

Arms are indices 0..K-1 into the model's exits, shallowest first; the last arm is the final
classifier (the whole network on the device).

Deciding and learning are two calls because on a device they happen at different times: the
reward of an offloaded sample is known only when the cloud replies (or never, if it times out).
Each :meth:`Policy.decide` hands out a :class:`Decision`; exactly one :meth:`Policy.update` or
:meth:`Policy.cancel` may follow for it. An update carries the rewards that sample *revealed*:
the chosen arm's and those of shallower arms whose exit the device computed on the way (see
:func:`shared.cost.RewardModel.revealed`). A deeper arm can never be revealed by a shallower
decision, and feeding one is an error, as is updating twice or for a decision never made.
"""

from __future__ import annotations

import math
import numbers
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from shared.errors import IsplitEEError

__all__ = [
    "POLICY_NAMES",
    "BanditError",
    "Decision",
    "DiscountedUCB",
    "FixedSplit",
    "ISplitEE",
    "Policy",
    "RandomSplit",
    "policy_from_state",
]

STATE_VERSION = 1


class BanditError(IsplitEEError):
    """A policy was misused: unknown or repeated decision, reward for an arm not revealed."""


@dataclass(frozen=True, slots=True)
class Decision:
    """One choice of split. ``id`` ties the later update to it."""

    id: int
    arm: int


class Policy(ABC):
    """Common bookkeeping: decision ids, pending decisions, validation, JSON state."""

    name: ClassVar[str]

    def __init__(self, n_arms: int) -> None:
        if n_arms < 1:
            raise ValueError(f"n_arms should be at least 1, got {n_arms!r}")
        self.n_arms = n_arms
        self.rounds = 0
        self._next_id = 0
        self._pending: dict[int, int] = {}

    # -- the two calls -------------------------------------------------------------------------
    def decide(self) -> Decision:
        """Choose the split for the next sample."""
        self.rounds += 1
        self._on_round()
        arm = self._choose()
        decision = Decision(self._next_id, arm)
        self._next_id += 1
        self._pending[decision.id] = arm
        return decision

    def update(self, decision: Decision | int, rewards: Mapping[int, float]) -> None:
        """Learn from the rewards one decided sample revealed (arm index -> reward).

        Invalid rewards raise before anything is learnt and leave the decision open.
        """
        did, arm = self._open(decision)
        for j, r in rewards.items():
            if not ((type(j) is int or isinstance(j, numbers.Integral)) and 0 <= j <= arm):
                raise BanditError(
                    f"decision {did} chose arm {arm}; it cannot reveal the reward of arm {j!r} "
                    f"(only arms 0..{arm})"
                )
            if not math.isfinite(r):
                raise BanditError(f"reward of arm {j} should be a finite number, got {r!r}")
        del self._pending[did]
        for j, r in rewards.items():
            self._learn(int(j), float(r))

    def cancel(self, decision: Decision | int) -> None:
        """Drop a decision whose feedback will never come (e.g. the cloud timed out)."""
        did, _ = self._open(decision)
        del self._pending[did]

    @property
    def pending(self) -> int:
        """Decisions handed out and neither updated nor cancelled."""
        return len(self._pending)

    def _open(self, decision: Decision | int) -> tuple[int, int]:
        """The id and arm of a decision still waiting for its update."""
        did = decision.id if isinstance(decision, Decision) else int(decision)
        arm = self._pending.get(did)
        if arm is None:
            state = "was already settled" if 0 <= did < self._next_id else "was never made"
            raise BanditError(f"decision {did} {state}: each decision is updated at most once")
        if isinstance(decision, Decision) and decision.arm != arm:
            raise BanditError(f"decision {did} chose arm {arm}, not {decision.arm}")
        return did, arm

    # -- what each policy defines ----------------------------------------------------------------
    @abstractmethod
    def _choose(self) -> int: ...

    def _learn(self, arm: int, reward: float) -> None:  # noqa: B027 - baselines learn nothing
        """Take one observed reward for one arm."""

    def _on_round(self) -> None:  # noqa: B027 - only the discounted policy needs it
        """Called once per decision, before choosing."""

    def _params(self) -> dict[str, Any]:
        return {}

    def _stats(self) -> dict[str, Any]:
        return {}

    def _load_stats(self, stats: Mapping[str, Any]) -> None:  # noqa: B027
        pass

    # -- persistence ------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """JSON-ready state; :func:`policy_from_state` restores a policy that decides the same."""
        return {
            "version": STATE_VERSION,
            "policy": self.name,
            "n_arms": self.n_arms,
            "params": self._params(),
            "rounds": self.rounds,
            "next_id": self._next_id,
            "pending": [[i, a] for i, a in self._pending.items()],
            "stats": self._stats(),
        }

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}(n_arms={self.n_arms}{', ' if params else ''}{params})"


class ISplitEE(Policy):
    """UCB1 over the splits, with side observations (the paper's algorithm).

    Q(i) is the mean of every reward observed for arm i, N(i) their count; arm i's index is
    ``Q(i) + c * sqrt(ln t / N(i))`` with t the round. Arms never observed are tried first, in
    order. Rewards lie in about [-1.4, 1] with the paper's constants, so ``c = 1`` explores a lot;
    smaller ``c`` settles faster on a clear winner and risks sticking to a near-best arm.
    """

    name = "isplitee"
    DEFAULT_C: ClassVar[float] = 1.0
    """The paper's exploration constant."""

    def __init__(self, n_arms: int, *, c: float = DEFAULT_C) -> None:
        super().__init__(n_arms)
        if not c >= 0:
            raise ValueError(f"exploration c should be >= 0, got {c!r}")
        self.c = float(c)
        self.counts = [0.0] * n_arms
        self.values = [0.0] * n_arms

    def _choose(self) -> int:
        counts, values = self.counts, self.values
        for i in range(self.n_arms):
            if counts[i] <= 0:
                return i
        log_t = math.log(self._horizon())
        best, best_index = 0, -math.inf
        for i in range(self.n_arms):
            index = values[i] + self.c * math.sqrt(log_t / counts[i])
            if index > best_index:
                best, best_index = i, index
        return best

    def _horizon(self) -> float:
        return max(self.rounds, 1)

    def _learn(self, arm: int, reward: float) -> None:
        self.counts[arm] += 1.0
        self.values[arm] += (reward - self.values[arm]) / self.counts[arm]

    def _params(self) -> dict[str, Any]:
        return {"c": self.c}

    def _stats(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "values": list(self.values)}

    def _load_stats(self, stats: Mapping[str, Any]) -> None:
        self.counts = [float(x) for x in stats["counts"]]
        self.values = [float(x) for x in stats["values"]]


class DiscountedUCB(ISplitEE):
    """I-SplitEE with discounting (D-UCB, Garivier & Moulines 2011) for scenes that change.

    Every round all counts and reward sums shrink by ``discount``, so an observation made k
    rounds ago weighs ``discount**k``: the policy remembers about ``1 / (1 - discount)`` rounds.
    Chosen over a sliding window because it needs O(arms) state, which keeps the JSON state
    small for the device, and because side observations and late (offload) rewards simply add
    weight where a window would have to place them in its history. An arm left alone sees its
    count decay and its exploration bonus grow, so it is re-tried after a change.

    Its counts never grow past about ``1 / (1 - discount)``, so its exploration bonus never
    fades as UCB1's does; with the paper's c = 1 it keeps spending about a quarter of the
    rounds off the best arm. Hence the default c = 0.25 (docs/results.md measures the choice).
    """

    name = "isplitee-nonstationary"
    DEFAULT_C: ClassVar[float] = 0.25
    DEFAULT_DISCOUNT: ClassVar[float] = 0.995

    def __init__(
        self, n_arms: int, *, c: float = DEFAULT_C, discount: float = DEFAULT_DISCOUNT
    ) -> None:
        super().__init__(n_arms, c=c)
        if not 0.0 < discount < 1.0:
            raise ValueError(f"discount should be in (0, 1), got {discount!r}")
        self.discount = float(discount)
        self._total = 0.0  # discounted number of rounds: sum of discount**k

    def _on_round(self) -> None:
        # Shrinking a count leaves the running mean as it is (sum and count shrink alike), so
        # the discounted mean is kept by the same incremental update as UCB1's.
        d = self.discount
        self._total = self._total * d + 1.0
        self.counts = [n * d for n in self.counts]

    def _horizon(self) -> float:
        return max(self._total, 1.0)

    def _params(self) -> dict[str, Any]:
        return {"c": self.c, "discount": self.discount}

    def _stats(self) -> dict[str, Any]:
        return {**super()._stats(), "total": self._total}

    def _load_stats(self, stats: Mapping[str, Any]) -> None:
        super()._load_stats(stats)
        self._total = float(stats["total"])


class FixedSplit(Policy):
    """Always the same arm: the fixed-split baseline, ``final`` (last arm) and the oracle."""

    name = "fixed"

    def __init__(self, n_arms: int, *, arm: int, label: str | None = None) -> None:
        super().__init__(n_arms)
        if not 0 <= arm < n_arms:
            raise ValueError(f"arm should be in 0..{n_arms - 1}, got {arm!r}")
        self.arm = arm
        self.label = label

    def _choose(self) -> int:
        return self.arm

    def _params(self) -> dict[str, Any]:
        return {"arm": self.arm, "label": self.label}


class RandomSplit(Policy):
    """A uniformly random arm each round."""

    name = "random"

    def __init__(self, n_arms: int, *, seed: int = 0) -> None:
        super().__init__(n_arms)
        self.seed = seed
        self._rng = random.Random(seed)

    def _choose(self) -> int:
        return self._rng.randrange(self.n_arms)

    def _params(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def _stats(self) -> dict[str, Any]:
        version, internal, gauss = self._rng.getstate()
        return {"rng": [version, list(internal), gauss]}

    def _load_stats(self, stats: Mapping[str, Any]) -> None:
        version, internal, gauss = stats["rng"]
        self._rng.setstate((version, tuple(internal), gauss))


_REGISTRY: dict[str, type[Policy]] = {
    cls.name: cls for cls in (ISplitEE, DiscountedUCB, FixedSplit, RandomSplit)
}
POLICY_NAMES = tuple(_REGISTRY)


def policy_from_state(state: Mapping[str, Any]) -> Policy:
    """Rebuild a policy from :meth:`Policy.to_state` output (e.g. read back from JSON)."""
    try:
        if state["version"] != STATE_VERSION:
            raise BanditError(
                f"bandit state version {state['version']!r} is not supported "
                f"(expected {STATE_VERSION}); delete the state file to start learning afresh"
            )
        cls = _REGISTRY[state["policy"]]
        policy = cls(int(state["n_arms"]), **state["params"])
        policy.rounds = int(state["rounds"])
        policy._next_id = int(state["next_id"])
        policy._pending = {int(i): int(a) for i, a in state["pending"]}
        policy._load_stats(state["stats"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BanditError(
            f"invalid bandit state ({type(exc).__name__}: {exc}); delete the state file to "
            "start learning afresh"
        ) from exc
    return policy

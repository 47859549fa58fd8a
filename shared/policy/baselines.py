"""The baselines the bandit is judged against: a fixed split (``fixed:BLOCK``, ``final``),
offloading every frame at the cheapest split (``offload-all``), and a random split."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from shared.cost import RewardModel
from shared.policy.base import Policy
from shared.policy.checks import is_index

__all__ = ["FixedSplit", "OffloadAll", "RandomSplit"]


class FixedSplit(Policy):
    """Always the same arm: the fixed-split baseline, ``final`` (last arm) and the oracle."""

    name = "fixed"

    def __init__(self, rewards: RewardModel, *, arm: int, label: str | None = None) -> None:
        super().__init__(rewards)
        if not (is_index(arm) and 0 <= arm < self.n_arms):
            raise ValueError(f"arm should be in 0..{self.n_arms - 1}, got {arm!r}")
        self.arm = int(arm)
        self.label = label

    @property
    def spec(self) -> str:
        return self.label or f"fixed:{self._rewards.cost.blocks[self.arm]}"

    def _choose(self) -> int:
        return self.arm

    def params(self) -> dict[str, Any]:
        return {"arm": self.arm, "label": self.label}

    @classmethod
    def widen(cls, params: dict[str, Any], extra: dict[str, Any]) -> None:
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
        if not is_index(seed):
            raise ValueError(f"seed should be an integer, got {seed!r}")
        self.seed = int(seed)
        self._rng = random.Random(self.seed)

    @property
    def spec(self) -> str:
        return self.name

    def _choose(self) -> int:
        return self._rng.randrange(self.n_arms)

    def params(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def _extra_state(self) -> dict[str, Any]:
        version, internal, gauss = self._rng.getstate()
        return {"rng": [version, list(internal), gauss]}

    def _load_extra(self, extra: Mapping[str, Any]) -> None:
        version, internal, gauss = extra["rng"]
        self._rng.setstate((version, tuple(internal), gauss))

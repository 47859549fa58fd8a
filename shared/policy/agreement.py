"""What audits showed about each exit: how often it would have published another label than
the final classifier, at alpha and at stricter thresholds (docs/bandit.md, "The referee")."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from shared.policy.checks import check_counts, is_count

__all__ = ["LEVELS", "THRESHOLDS", "Agreement"]

THRESHOLDS: tuple[float, ...] = (0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
"""Stricter exit thresholds the referee checks beside alpha (those above alpha count)."""

LEVELS = 1 + len(THRESHOLDS)
"""Thresholds counted per exit: level 0 is alpha, level k > 0 is ``THRESHOLDS[k - 1]``."""


class Agreement:
    """Per exit j: ``n[j]`` audited samples that computed it and ``d[j][k]`` of them on which
    it was confident at level k and disagreed with the final classifier, each older audit
    discounted by ``memory``; and, undiscounted since the start, ``agree_n[j]`` audits on which
    it was confident at alpha and ``agree_d[j]`` of them disagreeing (the agreement report)."""

    def __init__(self, n_exits: int, memory: float) -> None:
        self.n_exits = n_exits
        self.memory = memory
        self.n = [0.0] * n_exits
        self.d = [[0.0] * LEVELS for _ in range(n_exits)]
        self.agree_n = [0.0] * n_exits
        self.agree_d = [0.0] * n_exits

    def record(
        self,
        confidences: Sequence[float],
        classes: Sequence[int],
        final_class: int,
        levels: Sequence[float],
    ) -> None:
        """One sample whose final class was revealed independently of its exits; ``levels``
        the thresholds (alpha, *THRESHOLDS)."""
        memory, alpha = self.memory, levels[0]
        for j in range(min(len(confidences), self.n_exits)):
            c = confidences[j]
            differs = classes[j] != final_class
            self.n[j] = self.n[j] * memory + 1.0
            d = self.d[j]
            for k, tau in enumerate(levels):
                d[k] = d[k] * memory + (1.0 if differs and c >= tau else 0.0)
            if c >= alpha:
                self.agree_n[j] += 1.0
                self.agree_d[j] += 1.0 if differs else 0.0

    def forget(self) -> None:
        """Drop the discounted counts (the scene changed); the report since the start stays."""
        self.n = [0.0] * self.n_exits
        self.d = [[0.0] * LEVELS for _ in range(self.n_exits)]

    def to_state(self) -> dict[str, Any]:
        return {
            "n": list(self.n),
            "d": [list(d) for d in self.d],
            "agree_n": list(self.agree_n),
            "agree_d": list(self.agree_d),
        }

    def load(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state`; a bad state raises ValueError/KeyError/TypeError."""
        self.n = check_counts("referee.n", state["n"], self.n_exits)
        self.agree_n = check_counts("referee.agree_n", state["agree_n"], self.n_exits)
        self.agree_d = check_counts("referee.agree_d", state["agree_d"], self.n_exits)
        self.d = _disagreements(state["d"], self.n_exits)
        if any(x > n * (1 + 1e-9) for d, n in zip(self.d, self.n, strict=True) for x in d):
            raise ValueError("referee: more disagreements than audits")

    @staticmethod
    def widened(state: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`to_state` output (within a referee's) with one more exit in front that
        nothing was seen at."""
        out = dict(state)
        for key in ("n", "agree_n", "agree_d"):
            out[key] = [0.0, *state[key]]
        out["d"] = [[0.0] * LEVELS, *state["d"]]
        return out


def _disagreements(values: object, n_exits: int) -> list[list[float]]:
    """A state's ``d``: per exit, a count per level. A state saved before levels existed holds
    one count per exit, at alpha; it stands for every stricter level too, an upper bound (an
    exit confident at a stricter threshold is confident at alpha), so nothing is trusted
    sooner than it would have been."""
    if not (isinstance(values, list) and len(values) == n_exits):
        raise ValueError(f"referee.d should hold {n_exits} exits")
    out = []
    for v in values:
        if is_count(v):
            out.append([float(v)] * LEVELS)  # type: ignore[arg-type]
        elif (
            isinstance(v, list)
            and len(v) == LEVELS
            and all(is_count(x) for x in v)
            and all(b <= a * (1 + 1e-9) for a, b in itertools.pairwise(v[1:]))
        ):  # THRESHOLDS ascend, so each counts no more than the one before (alpha may be above)
            out.append([float(x) for x in v])
        else:
            raise ValueError(
                f"referee.d should hold, per exit, {LEVELS} finite counts >= 0, got {v!r}"
            )
    return out

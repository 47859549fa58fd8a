"""When the referee audits: a credit counter at a rate that decays while the exits agree, and
jumps to its highest after a confident disagreement or a change in the exits' confidences.

Audits must be chosen without looking at the frame for the referee's counts to be drawn like
the stream, hence a deterministic counter rather than a coin or a rule on confidences
(docs/bandit.md, "After a change", gives the bounds this schedule keeps).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.policy.checks import check_unit

__all__ = ["AuditSchedule", "ChangeDetector"]


class AuditSchedule:
    """Audits at ``rate`` (between ``min_rate`` and ``max_rate``), spread evenly."""

    def __init__(self, *, min_rate: float, max_rate: float, decay: float) -> None:
        self.min_rate = check_unit("min_rate", min_rate, open_low=True)
        self.max_rate = check_unit("max_rate", max_rate, open_low=True)
        if self.min_rate > self.max_rate:
            raise ValueError(f"min_rate {min_rate!r} should be at most max_rate {max_rate!r}")
        self.decay = check_unit("decay", decay)
        self.rate = self.max_rate
        self.credit = 0.0
        self.audits = 0
        self.decisions = 0

    def audit_now(self) -> bool:
        """Whether this decision is an audit (never depends on the frame)."""
        self.decisions += 1
        self.credit += self.rate
        if self.credit >= 1.0 - 1e-12:
            self.credit -= 1.0
            self.audits += 1
            return True
        return False

    @property
    def audit_rate(self) -> float:
        """Share of decisions audited so far."""
        return self.audits / self.decisions if self.decisions else 0.0

    def audited(self, alarm: bool) -> None:
        """An audit was recorded: the highest rate after an ``alarm`` (a trusted exit
        disagreed where it would have answered), else one step of decay."""
        self.rate = self.max_rate if alarm else max(self.min_rate, self.rate * self.decay)

    def restart(self) -> None:
        """Everything learnt was dropped: audit at the highest rate."""
        self.rate = self.max_rate

    def to_state(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "credit": self.credit,
            "audits": self.audits,
            "decisions": self.decisions,
        }

    def load(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state`; a bad value raises ValueError."""
        self.rate = check_unit("referee.rate", state["rate"], open_low=True)
        self.credit = float(state["credit"])
        self.audits = _count("audits", state["audits"])
        self.decisions = _count("decisions", state["decisions"])


class ChangeDetector:
    """A free change detector: a fast and a slow running mean of whether exit 0 is confident,
    seen on every frame; they drift apart by more than ``shift`` when the scene changes."""

    def __init__(self, *, shift: float) -> None:
        self.shift = check_unit("shift", shift, open_low=True)
        self.fast = 0.0  # running means of "exit 0 confident" since the last change
        self.slow = 0.0
        self.seen = 0
        self.changes = 0

    def watch(self, confident: bool) -> bool:
        """One frame's exit 0; True when a change fired (both means start again)."""
        x = 1.0 if confident else 0.0
        self.seen += 1
        self.fast += (x - self.fast) / min(self.seen, 50)
        self.slow += (x - self.slow) / min(self.seen, 500)
        if self.seen >= 50 and abs(self.fast - self.slow) > self.shift:
            self.seen = 0
            self.changes += 1
            return True
        return False

    def to_state(self) -> dict[str, Any]:
        return {"fast": self.fast, "slow": self.slow, "seen": self.seen, "changes": self.changes}

    def load(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state`; a bad value raises ValueError."""
        self.fast, self.slow = float(state["fast"]), float(state["slow"])
        self.changes = _count("changes", state["changes"])
        self.seen = _count("seen", state["seen"])


def _count(key: str, value: object) -> int:
    if not (isinstance(value, int) and value >= 0):
        raise ValueError(f"referee.{key} should be an integer >= 0, got {value!r}")
    return value

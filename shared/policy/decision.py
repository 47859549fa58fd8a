"""What a policy hands out (:class:`Decision`) and the error for misusing one."""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import IsplitEEError

__all__ = ["BanditError", "Decision"]


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

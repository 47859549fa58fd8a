"""The check of what a device reports for a decision, before any policy learns from it.

A bad observation must teach nothing and leave its decision open, so every policy checks it
the same way first (:func:`check_observation`).
"""

from __future__ import annotations

import math
from typing import Any

from shared.cost import Observation
from shared.policy.checks import is_index, is_unit
from shared.policy.decision import BanditError, Decision

__all__ = ["check_observation"]


def check_observation(
    decision: Decision, obs: Observation, *, n_arms: int, alpha: float
) -> tuple[Any, float | None]:
    """The exits' confidences and C_L of ``obs``, once it fits ``decision``.

    One confidence per exit 0..arm, each in [0, 1], or per exit of the network when an audit's
    reply carried the exits after the split (the cloud computes them); C_L given when the
    last exit is listed, and then equal to its confidence; no C_L after a confident exit unless
    it was an audit; classes one per confidence, the final class only with C_L. Anything else
    is a :class:`BanditError`.
    """
    did, arm = decision.id, decision.arm
    if not isinstance(obs, Observation):
        raise BanditError(f"decision {did}: observe takes an Observation, got {type(obs).__name__}")
    conf = obs.confidences
    if not isinstance(conf, tuple | list) or len(conf) not in (arm + 1, n_arms):
        got = len(conf) if isinstance(conf, tuple | list) else repr(conf)
        raise BanditError(
            f"decision {did} chose arm {arm}: it computes {arm + 1} exit confidences "
            f"(exits 0..{arm}), got {got}; an audit may list every exit's ({n_arms})"
        )
    if len(conf) == n_arms and arm != n_arms - 1 and obs.audit is not True:
        raise BanditError(
            f"decision {did}: every exit's confidence for arm {arm} is a whole-network "
            "sample only when the frame was offloaded whatever its exit said (audit=True)"
        )
    for j, x in enumerate(conf):
        if not is_unit(x):
            raise BanditError(
                f"decision {did}: confidence of exit {j} should be a number in [0, 1], got {x!r}"
            )
    final = obs.final_confidence
    if final is not None and not is_unit(final):
        raise BanditError(
            f"decision {did}: final_confidence should be a number in [0, 1] or None, got {final!r}"
        )
    last = n_arms - 1
    if len(conf) == n_arms:
        if final is None or not math.isclose(final, conf[-1], rel_tol=0, abs_tol=1e-9):
            raise BanditError(
                f"decision {did} revealed the whole network (arm {arm}): final_confidence "
                f"is its last exit's confidence {conf[-1]!r}, got {final!r}"
            )
    elif final is not None and not obs.audit and decision.answers(conf[arm], alpha):
        threshold = alpha if decision.threshold is None else decision.threshold
        raise BanditError(
            f"decision {did}: exit {arm} was confident ({conf[arm]:g} >= its threshold "
            f"{threshold:g}), so nobody computed C_L; pass audit=True if the frame was "
            "offloaded anyway"
        )
    if type(obs.audit) is not bool:
        raise BanditError(f"decision {did}: audit should be a bool, got {obs.audit!r}")
    _check_classes(did, arm, last, obs, final)
    return conf, None if final is None else float(final)


def _check_classes(did: int, arm: int, last: int, obs: Observation, final: Any) -> None:
    classes, final_class = obs.classes, obs.final_class
    width = len(obs.confidences)
    if classes is not None and not (
        isinstance(classes, tuple | list)
        and len(classes) == width
        and all(is_index(x) for x in classes)
    ):
        raise BanditError(
            f"decision {did}: classes should be {width} integers, one per confidence, or "
            f"None, got {classes!r}"
        )
    if final_class is None:
        return
    if not is_index(final_class):
        raise BanditError(
            f"decision {did}: final_class should be an integer or None, got {final_class!r}"
        )
    if final is None:
        raise BanditError(
            f"decision {did}: final_class given without final_confidence: both come "
            "from the final classifier"
        )
    if width == last + 1 and classes is not None and classes[-1] != final_class:
        raise BanditError(
            f"decision {did} revealed the whole network: final_class is its last exit's "
            f"class {classes[-1]!r}, got {final_class!r}"
        )

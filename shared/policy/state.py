"""A policy's saved state, validated before anything is restored from it.

A node restores its policy from a JSON file that may be damaged or hand-edited, so every field
is checked here, against the reward model it will be restored under, and a bad one is a
:class:`~shared.policy.decision.BanditError` at load time rather than a wrong decision later.
The layout (version 3) is what :meth:`shared.policy.base.Policy.to_state` writes; the policy's
own parameters and extra state are checked by the class that reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from shared.cost import RewardModel
from shared.policy.checks import is_index, is_unit
from shared.policy.decision import BanditError, Decision
from shared.policy.stats import check_stats

__all__ = ["DELETE_HINT", "STATE_VERSION", "PolicyState", "parse_state"]

STATE_VERSION = 3
DELETE_HINT = "delete the state file to start learning afresh"


class PolicyState(BaseModel):
    """The fields every policy's state has, checked in this order; ``context={"rewards": rm}``
    names the reward model the state must fit."""

    model_config = ConfigDict(frozen=True)

    version: int
    policy: str
    n_arms: Any
    alpha: Any
    params: Mapping[str, Any]
    rounds: Any
    next_id: Any
    audits: Any
    pending: tuple[Decision, ...]
    stats: dict[str, list[float]]
    extra: Mapping[str, Any]

    @field_validator("n_arms")
    @classmethod
    def _n_arms(cls, k: Any, info: ValidationInfo) -> int:
        rm = _rewards(info)
        if k != rm.n_arms:
            raise ValueError(f"the state has {k!r} arms, the model {rm.n_arms}")
        return rm.n_arms

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, alpha: Any, info: ValidationInfo) -> float:
        rm = _rewards(info)
        if alpha != rm.alpha:
            raise ValueError(
                f"the state was learnt with alpha {alpha!r}, the node uses {rm.alpha!r}"
            )
        return rm.alpha

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, params: Any) -> Mapping[str, Any]:
        if not isinstance(params, Mapping):
            raise ValueError("params should be a mapping")
        return params

    @field_validator("next_id")
    @classmethod
    def _counts(cls, next_id: Any, info: ValidationInfo) -> int:
        rounds = info.data.get("rounds")
        if not (is_index(rounds) and is_index(next_id) and rounds >= 0 and next_id >= 0):
            raise ValueError(
                f"rounds and next_id should be integers >= 0, got {rounds!r}, {next_id!r}"
            )
        return int(next_id)

    @field_validator("audits")
    @classmethod
    def _audits(cls, audits: Any, info: ValidationInfo) -> int:
        rounds = info.data.get("rounds")
        if not (is_index(audits) and is_index(rounds) and 0 <= audits <= rounds):
            raise ValueError(f"audits should be an integer in 0..rounds, got {audits!r}")
        return int(audits)

    @field_validator("pending", mode="before")
    @classmethod
    def _pending(cls, items: Any, info: ValidationInfo) -> tuple[Decision, ...]:
        """``[id, arm]`` or ``[id, arm, threshold]`` each; the audit flag is not kept: once
        the decision is out, only its arm and threshold are checked against the observation."""
        next_id, k, alpha = info.data.get("next_id", 0), _rewards(info).n_arms, _rewards(info).alpha
        pending: dict[int, Decision] = {}
        for item in items:
            did, arm, *rest = item
            if not (is_index(did) and 0 <= did < next_id and is_index(arm) and 0 <= arm < k):
                raise ValueError(
                    f"pending decision {item!r} is outside ids 0..{next_id - 1} / arms 0..{k - 1}"
                )
            if int(did) in pending:
                raise ValueError(f"pending decision {did!r} appears twice")
            threshold = None
            if rest:
                (threshold,) = rest
                if not (is_unit(threshold) and threshold > alpha):
                    raise ValueError(
                        f"pending decision {item!r}: a threshold is a number in (alpha, 1]"
                    )
                threshold = float(threshold)
            pending[int(did)] = Decision(int(did), int(arm), threshold=threshold)
        return tuple(pending.values())

    @field_validator("stats", mode="before")
    @classmethod
    def _stats(cls, stats: Any, info: ValidationInfo) -> dict[str, list[float]]:
        return check_stats(stats, _rewards(info).n_arms)


def _rewards(info: ValidationInfo) -> RewardModel:
    return info.context["rewards"]


def parse_state(state: Mapping[str, Any], rewards: RewardModel) -> PolicyState:
    """``state`` checked against ``rewards``: a :class:`BanditError` names the first fault."""
    if not isinstance(state, Mapping):
        raise BanditError(
            f"invalid bandit state (state should be a mapping, got {type(state).__name__}); "
            f"{DELETE_HINT}"
        )
    version = state.get("version")
    if version != STATE_VERSION:
        raise BanditError(
            f"bandit state version {version!r} is not supported (expected {STATE_VERSION}); "
            f"{DELETE_HINT}"
        )
    try:
        return PolicyState.model_validate(state, context={"rewards": rewards})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        why = error["msg"].removeprefix("Value error, ")
        raise BanditError(f"invalid bandit state ({where}: {why}); {DELETE_HINT}") from None
    except (KeyError, TypeError, IndexError) as exc:
        raise BanditError(
            f"invalid bandit state ({type(exc).__name__}: {exc}); {DELETE_HINT}"
        ) from exc

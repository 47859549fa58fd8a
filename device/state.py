"""The node's bandit state on disk: written atomically, restored only when it still applies.

A node is often stopped by pulling its plug, so the file is written to a temporary name,
flushed to disk and renamed over the old one: a reader sees the old state or the new one,
never half of one. What was learnt belongs to one model and one set of arms; with another
checkpoint the node starts afresh (with a warning) rather than trusting statistics of a
different network. A file that cannot be read is moved aside, never silently deleted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from shared.bandit import BanditError, Policy, policy_from_state
from shared.cost import RewardModel

__all__ = ["STATE_FORMAT", "load_state", "save_state"]

log = logging.getLogger(__name__)

STATE_FORMAT = "isplitee.node-state/1"


def save_state(path: Path, policy: Policy, *, model_hash: str, blocks: tuple[int, ...], spec: str):
    """Write the policy's state for this model (pending decisions die with the process)."""
    body: dict[str, Any] = {
        "format": STATE_FORMAT,
        "model_hash": model_hash,
        "blocks": list(blocks),
        "policy_spec": spec,
        "saved_at": time.time(),
        "policy": {**policy.to_state(), "pending": []},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(body, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _move_aside(path: Path, why: str) -> None:
    aside = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(path, aside)
    log.warning("bandit state %s %s; moved it to %s and started afresh", path, why, aside)


def load_state(
    path: Path, rewards: RewardModel, *, model_hash: str, blocks: tuple[int, ...], spec: str
) -> Policy | None:
    """The saved policy when it belongs to this model, arms and policy; else None."""
    if not path.exists():
        return None
    try:
        body = json.loads(path.read_text())
        if not isinstance(body, dict) or body.get("format") != STATE_FORMAT:
            raise ValueError("not an isplitee node state")
    except (OSError, ValueError) as exc:
        _move_aside(path, f"cannot be read ({exc})")
        return None
    if body.get("model_hash") != model_hash or tuple(body.get("blocks", ())) != blocks:
        log.warning(
            "bandit state %s is for model %s, not %s: starting afresh",
            path,
            str(body.get("model_hash"))[:12],
            model_hash[:12],
        )
        return None
    if body.get("policy_spec") != spec:
        log.warning(
            "bandit state %s is for policy %s, not %s: starting afresh",
            path,
            body.get("policy_spec"),
            spec,
        )
        return None
    try:
        policy = policy_from_state(body["policy"], rewards)
    except (BanditError, KeyError) as exc:
        _move_aside(path, f"is invalid ({exc})")
        return None
    log.info("restored bandit state from %s (%d rounds)", path, policy.rounds)
    return policy

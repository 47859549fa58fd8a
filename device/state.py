"""The node's bandit state on disk: written atomically, restored only when it still applies.

A node is often stopped by pulling its plug, so the file is written to a temporary name,
flushed to disk and renamed over the old one: a reader sees the old state or the new one,
never half of one. What was learnt belongs to one model and one set of arms; with another
checkpoint the node starts afresh (with a warning) rather than trusting statistics of a
different network. A file that cannot be read is moved aside, never silently deleted.

The file also keeps the settings the policy was learning under (alpha, mu, policy, encoding)
beside the ones the configuration gave at the time: a setting changed at run time over MQTT
(``set/<key>``) outlives a restart, unless the configuration itself has changed that key since
(:func:`resumed_settings`). Without that, a state learnt at a runtime alpha would not fit the
configured one, and a restart would throw away everything learnt since the change.

A state saved without the frame arm (block 0) restores into a node that has it: the arm is
added in front, never observed (:func:`shared.policy.with_first_arm`), and what was learnt
about the model's exits is kept.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.cost import RewardModel
from shared.policy import BanditError, Policy, policy_from_state, with_first_arm
from shared.protocol import FRAME_BLOCK

__all__ = ["RESUMED", "STATE_FORMAT", "load_state", "resumed_settings", "save_state"]

log = logging.getLogger(__name__)

STATE_FORMAT = "isplitee.node-state/1"

RESUMED = ("alpha", "mu", "policy", "encoding")
"""Runtime settings a state file carries across a restart (``reset`` leaves nothing to keep)."""


def save_state(
    path: Path,
    policy_state: Mapping[str, Any],
    *,
    model_hash: str,
    blocks: tuple[int, ...],
    spec: str,
    settings: dict[str, Any] | None = None,
    configured: dict[str, Any] | None = None,
):
    """Write a policy's state (:meth:`~shared.policy.Policy.to_state`) for this model (pending
    decisions die with the process), with the ``settings`` in effect and the ``configured``
    values they started from."""
    body: dict[str, Any] = {
        "format": STATE_FORMAT,
        "model_hash": model_hash,
        "blocks": list(blocks),
        "policy_spec": spec,
        "saved_at": time.time(),
        "policy": {**policy_state, "pending": []},
    }
    if settings is not None and configured is not None:
        body["settings"] = {k: settings[k] for k in RESUMED}
        body["configured"] = {k: configured[k] for k in RESUMED}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(body, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _gains_frame_arm(saved: Any, blocks: tuple[int, ...]) -> bool:
    """Whether a state saved at arms ``saved`` is this node's but for the frame arm."""
    return blocks[:1] == (FRAME_BLOCK,) and isinstance(saved, list) and tuple(saved) == blocks[1:]


def _fits(body: dict[str, Any], model_hash: str, blocks: tuple[int, ...]) -> bool:
    saved = body.get("blocks", ())
    same = isinstance(saved, list) and tuple(saved) == blocks
    return body.get("model_hash") == model_hash and (same or _gains_frame_arm(saved, blocks))


def _move_aside(path: Path, why: str) -> None:
    aside = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(path, aside)
    log.warning("bandit state %s %s; moved it to %s and started afresh", path, why, aside)


def resumed_settings(
    path: Path, configured: dict[str, Any], *, model_hash: str, blocks: tuple[int, ...]
) -> dict[str, Any]:
    """The settings to start with: ``configured``, except where the state file at ``path``
    (of this model) holds a value set at run time for a key the configuration has not changed
    since."""
    try:
        body = json.loads(path.read_text())
        saved, then = body["settings"], body["configured"]
        if not (isinstance(saved, dict) and isinstance(then, dict)):
            return dict(configured)
        if not _fits(body, model_hash, blocks):
            return dict(configured)  # load_state says why it starts afresh
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return dict(configured)  # no state, or one from before settings were kept
    out = dict(configured)
    for key in RESUMED:
        if key not in saved or saved[key] == configured[key]:
            continue
        if then.get(key) == configured[key]:
            out[key] = saved[key]
            log.info(
                "%s = %r set at run time kept from %s (the configuration says %r; publish "
                "set/%s to change it)",
                key,
                saved[key],
                path,
                configured[key],
                key,
            )
        else:
            log.info(
                "%s: the configuration changed to %r since %r was set at run time; using it",
                key,
                configured[key],
                saved[key],
            )
    return out


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
    if body.get("model_hash") != model_hash:
        log.warning(
            "bandit state %s is for model %s, not %s: starting afresh",
            path,
            str(body.get("model_hash"))[:12],
            model_hash[:12],
        )
        return None
    if not _fits(body, model_hash, blocks):
        log.warning(
            "bandit state %s was learnt at the splits %s, this node chooses among %s "
            "(frame_offload changed?): starting afresh",
            path,
            body.get("blocks"),
            list(blocks),
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
    learnt_at = body["policy"].get("alpha") if isinstance(body.get("policy"), dict) else None
    if learnt_at is not None and learnt_at != rewards.alpha:
        # Not damage: the configuration's alpha changed since (a runtime alpha is resumed).
        log.warning(
            "bandit state %s was learnt at alpha %r, the node now uses %r: starting afresh",
            path,
            learnt_at,
            rewards.alpha,
        )
        return None
    try:
        state = body["policy"]
        if _gains_frame_arm(body["blocks"], blocks):
            state = with_first_arm(state)
            log.info("bandit state %s: the frame arm (block 0) added, never tried yet", path)
        policy = policy_from_state(state, rewards)
    except (BanditError, KeyError) as exc:
        _move_aside(path, f"is invalid ({exc})")
        return None
    log.info("restored bandit state from %s (%d rounds)", path, policy.rounds)
    return policy

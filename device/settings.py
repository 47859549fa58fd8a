"""Settings a node takes at run time over MQTT (``<prefix>/<device>/set/<key>``). Pure logic.

An operator (or Home Assistant, or Node-RED) changes a camera without restarting it: publish the
new value as the payload, plain text (``0.7``, ``fp16``, ``fixed:6``; JSON strings and numbers
are accepted too). Every value is validated here, with a message that names the key and the
fix; the node applies a valid one at once and echoes its effective settings, retained, on
``<prefix>/<device>/config``. A node with a ``--state`` file keeps alpha, mu, policy and
encoding set this way across restarts (unless its ``device.toml`` has changed that key since:
then the file wins); without one, changes last until the node restarts.

What each key accepts and does to the bandit is :data:`EFFECTS` and :func:`accepted` (the
table of docs/protocol.md is generated from them).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from shared.errors import IsplitEEError
from shared.policy import POLICY_SPECS, find_spec, listing
from shared.protocol import FRAME_BLOCK
from shared.wire import WIRE_CHOICES

__all__ = [
    "EFFECTS",
    "SETTABLE",
    "Setting",
    "SettingError",
    "accepted",
    "parse_setting",
    "validate_policy",
]

EFFECTS: dict[str, str] = {
    "alpha": "which frames exit changes: it starts learning afresh",
    "mu": "only the price of cost: it keeps what it learnt",
    "policy": "a new policy, learning from scratch",
    "encoding": "none (the next offloads use it; the bandit measures their round trips)",
    "reset": "forgets what it learnt",
}
"""What each runtime setting does to the bandit."""

SETTABLE = tuple(EFFECTS)


def accepted(key: str) -> str:
    """What ``key`` accepts, as the docs say it."""
    return {
        "alpha": "number in [0, 1]",
        "mu": "number ≥ 0",
        "policy": ", ".join(f"`{spec}`" for spec in POLICY_SPECS),
        "encoding": ", ".join(f"`{choice}`" for choice in WIRE_CHOICES),
        "reset": "anything",
    }[key]


class SettingError(IsplitEEError):
    """A runtime setting was refused; the message says which key and what would be accepted."""


@dataclass(frozen=True)
class Setting:
    key: str
    value: Any


def validate_policy(spec: str, blocks: tuple[int, ...]) -> str:
    """A policy spec this model can run (``fixed:BLOCK`` must name one of its exits)."""
    exits = list(blocks[:-1])
    try:
        _, block = find_spec(spec)
    except ValueError:
        raise SettingError(
            f"policy should be one of {listing()} (BLOCK in {exits}), got {spec!r}"
        ) from None
    if block is None or (block.isdigit() and int(block) in exits):
        return spec
    frame = " (0: the frame itself, frame_offload)" if FRAME_BLOCK in exits else ""
    raise SettingError(f"policy {spec!r}: BLOCK should be one of the model's exits {exits}{frame}")


def _text(key: str, payload: bytes) -> str:
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SettingError(f"{key}: the payload should be UTF-8 text") from None
    if text.startswith('"'):
        try:
            value = json.loads(text)
        except ValueError:
            raise SettingError(f"{key}: {text!r} is not a valid JSON string") from None
        if not isinstance(value, str):
            raise SettingError(f"{key}: expected text, got {text!r}")
        return value.strip()
    return text


def _number(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SettingError(f"{key} should be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise SettingError(f"{key} should be a finite number, got {text!r}")
    return value


def parse_setting(key: str, payload: bytes, *, blocks: tuple[int, ...]) -> Setting:
    """Validate one ``set/<key>`` message for a model with exits at ``blocks``."""
    if key not in SETTABLE:
        raise SettingError(f"unknown setting {key!r}: use one of {', '.join(SETTABLE)}")
    if key == "reset":
        return Setting("reset", True)
    text = _text(key, payload)
    if key == "alpha":
        value = _number(key, text)
        if not 0.0 <= value <= 1.0:
            raise SettingError(f"alpha should be in [0, 1], got {text!r}")
        return Setting(key, value)
    if key == "mu":
        value = _number(key, text)
        if value < 0:
            raise SettingError(f"mu should be >= 0, got {text!r}")
        return Setting(key, value)
    if key == "encoding":
        if text not in WIRE_CHOICES:
            raise SettingError(f"encoding should be one of {', '.join(WIRE_CHOICES)}, got {text!r}")
        return Setting(key, text)
    return Setting(key, validate_policy(text, blocks))

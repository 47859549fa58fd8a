"""One-file checkpoints: weights plus everything needed to use them correctly.

A device and a cloud worker must agree on more than weights: the input size, the
normalisation, the exits, the class names. All of it travels in the file, and a content hash
over all of it lets the two sides detect that they run different models (the pipeline puts the
hash in every message).

The file is a ``torch.save`` of plain tensors and one JSON string, read back with
``weights_only=True``: loading a checkpoint never unpickles arbitrary objects.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from shared.errors import IsplitEEError
from shared.meta import ModelMeta
from shared.model import MultiExitMobileNetV2
from shared.profile import ModelProfile, profile_model

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "ModelMeta",
    "build_model",
    "content_hash",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT = "isplitee.checkpoint"
FORMAT_VERSION = 1
MIN_HASH_PREFIX = 12
"""Shortest hash prefix ``expected_hash`` may be: as many hex digits as the short hash shows."""
_HEX = re.compile(r"[0-9a-f]+")


class CheckpointError(IsplitEEError):
    """A checkpoint file cannot be used; the message names the file and the problem."""


def build_model(meta: ModelMeta) -> MultiExitMobileNetV2:
    """The untrained network ``meta`` describes (weights are loaded into it)."""
    return MultiExitMobileNetV2(
        num_classes=meta.num_classes, width_mult=meta.width_mult, exit_blocks=meta.exit_blocks
    )


class Checkpoint:
    """A loaded checkpoint: the model in eval mode, its metadata and its content hash."""

    def __init__(self, model: MultiExitMobileNetV2, meta: ModelMeta, hash_: str, path: Path):
        self.model = model
        self.meta = meta
        self.hash = hash_
        self.path = path

    @property
    def short_hash(self) -> str:
        return self.hash[:12]

    @functools.cached_property
    def profile(self) -> ModelProfile:
        """Per-block compute and activation shape at the model's input size."""
        return profile_model(self.model, self.meta.input_size)


def content_hash(meta: ModelMeta, state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the metadata (canonical JSON) and every tensor's name, dtype, shape, bytes."""
    h = hashlib.sha256()
    h.update(json.dumps(meta.hashed_fields(), sort_keys=True).encode())
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | Path, model: MultiExitMobileNetV2, meta: ModelMeta) -> str:
    """Write ``model`` and ``meta`` to ``path``; returns the content hash."""
    if tuple(model.exit_blocks) != meta.exit_blocks or model.num_classes != meta.num_classes:
        raise ValueError(
            f"meta does not describe the model: exits {meta.exit_blocks} vs {model.exit_blocks}, "
            f"classes {meta.num_classes} vs {model.num_classes}"
        )
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    digest = content_hash(meta, state)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": meta.model_dump_json(),
        "content_hash": digest,
        "state_dict": state,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # a crash mid-write never leaves a half checkpoint under the real name
    return digest


def load_checkpoint(path: str | Path, *, expected_hash: str | None = None) -> Checkpoint:
    """Read, validate and build the model of a checkpoint.

    Raises:
        CheckpointError: missing, truncated or corrupted file, wrong format or version, weights
            that do not fit the metadata, or a hash other than ``expected_hash``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch's own text runs to several lines and, for a file that is not a checkpoint,
        # advises loading with weights_only=False: unsafe for a file nobody trusts. The type
        # (and an OS error's one line) is all a user needs.
        why = f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else type(exc).__name__
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({why}); the file is truncated, corrupted or not "
            "an isplitee checkpoint: copy it again, or train it again"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an isplitee checkpoint (no '{FORMAT}' header)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('format_version')!r} is not "
            f"supported (this isplitee reads version {FORMAT_VERSION}); retrain or upgrade"
        )
    if expected_hash is not None and not (
        isinstance(expected_hash, str)
        and MIN_HASH_PREFIX <= len(expected_hash) <= 64
        and _HEX.fullmatch(expected_hash)
    ):
        # A short or empty prefix would accept any model: "" is a prefix of every hash.
        raise CheckpointError(
            f"{path}: expected hash should be {MIN_HASH_PREFIX} to 64 lower-case hex digits "
            f"(the model's hash or its prefix), got {expected_hash!r}"
        )
    try:
        meta = ModelMeta.model_validate_json(payload["meta"])
        state = payload["state_dict"]
        stored_hash = str(payload["content_hash"])
    except (KeyError, ValidationError) as exc:
        raise CheckpointError(f"{path}: invalid checkpoint metadata: {exc}") from exc
    if not (
        isinstance(state, dict)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        bad = (
            type(state).__name__
            if not isinstance(state, dict)
            else next(
                f"{k!r}: {type(v).__name__}"
                for k, v in state.items()
                if not (isinstance(k, str) and isinstance(v, torch.Tensor))
            )
        )
        raise CheckpointError(
            f"{path}: state_dict should map parameter names to tensors, got {bad}; the file is "
            "corrupted or not an isplitee checkpoint"
        )
    digest = content_hash(meta, state)
    if digest != stored_hash:
        raise CheckpointError(
            f"{path}: content hash mismatch (file says {stored_hash[:12]}, contents give "
            f"{digest[:12]}): the file is corrupted"
        )
    if expected_hash is not None and not digest.startswith(expected_hash):
        raise CheckpointError(
            f"{path}: model hash {digest[:12]} differs from the expected {expected_hash[:12]}: "
            "device and cloud must load the same checkpoint"
        )
    model = build_model(meta)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the metadata: {exc}") from exc
    model.eval()
    return Checkpoint(model, meta, digest, path)

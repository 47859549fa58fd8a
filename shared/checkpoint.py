"""One-file checkpoints: weights plus everything needed to use them correctly.

A device and a cloud worker must agree on more than weights: the input size, the
normalisation, the exits, the class names. All of it travels in the file, and a content hash
over all of it lets the two sides detect that they run different models (the pipeline puts the
hash in every message).

The file is a ``torch.save`` of plain tensors and one JSON string, read back with
``weights_only=True``: loading a checkpoint never unpickles arbitrary objects.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.errors import IsplitEEError
from shared.model import DEFAULT_EXIT_BLOCKS, NUM_BLOCKS, MultiExitMobileNetV2
from shared.protocol import ENCODINGS
from shared.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "ModelMeta",
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


class ModelMeta(BaseModel):
    """What a checkpoint says about its model. Everything here is covered by the hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str = Field("mobilenet_v2", description="Backbone architecture.")
    width_mult: float = Field(1.0, gt=0, description="MobileNetV2 width multiplier.")
    num_classes: int = Field(ge=2, description="Classes of every exit.")
    input_size: int = Field(ge=16, le=1024, description="Square input side in pixels.")
    exit_blocks: tuple[int, ...] = Field(DEFAULT_EXIT_BLOCKS, description="Blocks with an exit.")
    class_names: tuple[str, ...] = Field(description="Label of each class index.")
    mean: tuple[float, float, float] = Field(IMAGENET_MEAN, description="Per-channel mean.")
    std: tuple[float, float, float] = Field(IMAGENET_STD, description="Per-channel std.")
    temperatures: tuple[float, ...] | None = Field(
        None, description="Per-arm softmax temperature from calibration; None means 1.0."
    )
    wire_encodings: tuple[str, ...] | None = Field(
        None,
        description="Per exit block, the smallest activation encoding the held-out images "
        "tolerated (shared.wire); None: not measured, nodes on encoding 'auto' send fp16.",
    )
    dataset: str = Field("", description="Dataset spec the model was trained on.")
    split_seed: int = Field(0, description="Seed of the train/val/test split (held-out data).")
    notes: dict[str, str] = Field(default_factory=dict, description="Free-form provenance.")

    @model_validator(mode="after")
    def _consistent(self) -> ModelMeta:
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names for {self.num_classes} classes"
            )
        if self.temperatures is not None and len(self.temperatures) != len(self.arm_blocks):
            raise ValueError(
                f"temperatures has {len(self.temperatures)} values for {len(self.arm_blocks)} arms"
            )
        if self.wire_encodings is not None and (
            len(self.wire_encodings) != len(self.exit_blocks)
            or not set(self.wire_encodings) <= set(ENCODINGS)
        ):
            raise ValueError(
                f"wire_encodings should name one of {', '.join(ENCODINGS)} for each of the "
                f"{len(self.exit_blocks)} exit blocks, got {list(self.wire_encodings)!r}"
            )
        if self.arch != "mobilenet_v2":
            raise ValueError(f"arch should be 'mobilenet_v2', got {self.arch!r}")
        # The model's constructor would refuse these later, without naming the file.
        blocks = self.exit_blocks
        steps = zip((0, *blocks), (*blocks, NUM_BLOCKS), strict=True)
        if not blocks or not all(a < b for a, b in steps):
            raise ValueError(
                "exit_blocks should be strictly increasing block numbers in "
                f"1..{NUM_BLOCKS - 1}, got {list(blocks)!r}"
            )
        return self

    @property
    def arm_blocks(self) -> tuple[int, ...]:
        return (*self.exit_blocks, NUM_BLOCKS)

    def arm_temperatures(self) -> tuple[float, ...]:
        return self.temperatures or tuple(1.0 for _ in self.arm_blocks)

    def build_model(self) -> MultiExitMobileNetV2:
        return MultiExitMobileNetV2(
            num_classes=self.num_classes, width_mult=self.width_mult, exit_blocks=self.exit_blocks
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


def content_hash(meta: ModelMeta, state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the metadata (canonical JSON) and every tensor's name, dtype, shape, bytes."""
    h = hashlib.sha256()
    fields = meta.model_dump(mode="json")
    if fields["wire_encodings"] is None:  # absent from files written before the field existed
        del fields["wire_encodings"]
    h.update(json.dumps(fields, sort_keys=True).encode())
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
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc}); the file is "
            "truncated, corrupted or not an isplitee checkpoint"
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
    model = meta.build_model()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the metadata: {exc}") from exc
    model.eval()
    return Checkpoint(model, meta, digest, path)

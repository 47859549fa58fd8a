"""What a model file says about its model: the metadata a checkpoint and an artefact share.

A node and a worker must agree on more than weights: the input size, the normalisation, the
exits, the class names, the temperatures. This module holds that description, with no torch,
so a device that runs an exported artefact reads it the same way the training side does.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.preprocess import IMAGENET_MEAN, IMAGENET_STD
from shared.protocol import ENCODINGS, NUM_BLOCKS

__all__ = ["DEFAULT_EXIT_BLOCKS", "ModelMeta"]

DEFAULT_EXIT_BLOCKS: tuple[int, ...] = (3, 6, 9, 12, 15, 18)
"""Where the paper hangs its exits (1-based block numbers)."""


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

    def hashed_fields(self) -> dict:
        """The fields the content hash covers, as JSON values (files written before
        ``wire_encodings`` existed have no such field, and keep their hash)."""
        fields = self.model_dump(mode="json")
        if fields["wire_encodings"] is None:
            del fields["wire_encodings"]
        return fields

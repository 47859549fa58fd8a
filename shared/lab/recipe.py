"""What a training run is made of, as values: the optimiser's settings and the whole recipe.

Torch-free, so the lab CLI and the demo can name a recipe (the bundled model's is
``shared.lab.demo.DIGITS_RECIPE``) without importing torch; ``train_checkpoint`` in
:mod:`shared.lab.training` runs one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from shared.meta import DEFAULT_EXIT_BLOCKS
from shared.preprocess import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["TrainConfig", "TrainRecipe"]


@dataclass(frozen=True)
class TrainConfig:
    """How the optimiser trains every exit jointly (``shared.lab.training.train_model``)."""

    epochs: int = 30
    batch_size: int = 64
    lr_backbone: float = 2e-3
    """The paper fine-tunes ImageNet weights at 1.5e-4; from scratch a larger rate is needed."""
    lr_exits: float = 1e-2
    weight_decay: float = 5e-4
    exit_weights: tuple[float, ...] | None = None
    """Loss weight per arm (shallowest first); None gives every arm weight 1."""
    augment: float = 0.0
    """Share of training images given a random paper distortion (noise or blur level)."""
    seed: int = 0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    progress: bool = True
    log: Callable[[str], None] = field(default=print, repr=False)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs should be at least 1, got {self.epochs!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size should be at least 2, got {self.batch_size!r}")
        if not 0.0 <= self.augment <= 1.0:
            raise ValueError(f"augment should be a share in [0, 1], got {self.augment!r}")


@dataclass(frozen=True)
class TrainRecipe:
    """Everything a checkpoint is trained from; ``train.seed`` also seeds the data split."""

    dataset: str = "digits"
    input_size: int = 32
    width: float = 1.0
    exit_blocks: tuple[int, ...] = DEFAULT_EXIT_BLOCKS
    pretrained: Literal["none", "imagenet"] = "none"
    calibrate_on: Literal["clean", "distorted"] = "distorted"
    """Fit exit temperatures on clean validation images (the paper), or under every paper
    noise and blur level too."""
    limit: int | None = None
    """Train, and calibrate under each condition, on at most this many images (smoke runs)."""
    train: TrainConfig = field(default_factory=TrainConfig)

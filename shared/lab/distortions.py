"""Image distortions of the paper: Gaussian noise and Gaussian blur, plus ``clean``.

What a level means (the same on tensors and on OpenCV frames):

* ``gaussian_noise:L`` adds independent N(0, (L/10)^2) noise to every pixel on the [0, 1]
  intensity scale (``L * 25.5`` on the 0..255 scale), then clips to the valid range. The
  paper's levels 0.5..3 thus span std 0.05 (barely visible) to 0.3 (heavy). The public
  I-SplitEE repository does not include its distortion code; the related early-exit code it
  descends from adds std ``L`` on the 0..255 scale, about 1 % of full scale at L = 3, which
  leaves accuracy untouched. We keep the level numbers and give them a range that hurts.
* ``gaussian_blur:S`` convolves with a Gaussian of standard deviation ``S`` pixels of the image
  it is applied to, kernel side ``2 * ceil(3 S) + 1`` (S = 0.5 -> 5, S = 1 -> 7), mirrored
  borders (OpenCV's BORDER_REFLECT_101, torchvision's "reflect").
* ``clean`` leaves the image as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BLUR_LEVELS",
    "KINDS",
    "NOISE_LEVELS",
    "Distortion",
    "blur_kernel_size",
    "noise_std",
]

Kind = Literal["clean", "gaussian_noise", "gaussian_blur"]
KINDS: tuple[str, ...] = ("clean", "gaussian_noise", "gaussian_blur")
NOISE_LEVELS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
BLUR_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def noise_std(level: float) -> float:
    """Noise standard deviation on the [0, 1] intensity scale for a noise level."""
    return level / 10.0


def blur_kernel_size(sigma: float) -> int:
    """Odd kernel side covering +-3 sigma."""
    return 2 * math.ceil(3 * sigma) + 1


@dataclass(frozen=True)
class Distortion:
    kind: Kind = "clean"
    level: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"distortion kind should be one of {KINDS}, got {self.kind!r}")
        if self.kind == "clean" and self.level != 0:
            raise ValueError(f"clean takes no level, got {self.level!r}")
        if self.kind != "clean" and not (0 < self.level <= 50):
            raise ValueError(f"{self.kind} level should be in (0, 50], got {self.level!r}")

    @classmethod
    def parse(cls, spec: str) -> Distortion:
        """``clean``, ``gaussian_noise:2`` or ``gaussian_blur:0.5``."""
        kind, _, level = spec.strip().partition(":")
        if kind not in KINDS:
            raise ValueError(
                f"unknown distortion {spec!r}: use clean, gaussian_noise:LEVEL or "
                "gaussian_blur:SIGMA"
            )
        if kind == "clean":
            if level:
                raise ValueError(f"clean takes no level, got {spec!r}")
            return cls()
        try:
            value = float(level)
        except ValueError:
            raise ValueError(f"{spec!r}: {kind} needs a numeric level, e.g. {kind}:1") from None
        return cls(kind, value)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return "clean" if self.kind == "clean" else f"{self.kind}:{self.level:g}"

    def apply_tensor(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Distort float images in [0, 1], shape (..., C, H, W); returns a new tensor."""
        if self.kind == "clean":
            return images.clone()
        if self.kind == "gaussian_noise":
            noise = torch.randn(
                images.shape, generator=generator, dtype=images.dtype, device=images.device
            )
            return (images + noise * noise_std(self.level)).clamp_(0.0, 1.0)
        from torchvision.transforms.functional import gaussian_blur

        k = blur_kernel_size(self.level)
        return gaussian_blur(images, kernel_size=[k, k], sigma=[self.level, self.level])

    def apply_frame(self, frame: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Distort a uint8 OpenCV frame (H, W) or (H, W, C); returns a new uint8 frame."""
        if frame.dtype != np.uint8:
            raise ValueError(f"frame should be uint8, got {frame.dtype}")
        if self.kind == "clean":
            return frame.copy()
        if self.kind == "gaussian_noise":
            rng = rng or np.random.default_rng()
            noisy = frame.astype(np.float32) + rng.normal(
                0.0, noise_std(self.level) * 255.0, frame.shape
            ).astype(np.float32)
            return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        import cv2

        k = blur_kernel_size(self.level)
        return cv2.GaussianBlur(
            frame, (k, k), sigmaX=self.level, sigmaY=self.level, borderType=cv2.BORDER_REFLECT_101
        )

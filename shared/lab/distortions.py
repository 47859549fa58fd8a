"""Image distortions: the paper's Gaussian noise and blur, and two a camera meets every day.

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
* ``jpeg:Q`` re-encodes the image as a JPEG of quality ``Q`` (an integer 1..100, OpenCV's
  libjpeg with its default 4:2:0 chroma subsampling) and decodes it again: the blocking and
  ringing of a camera or an RTSP stream set to save bandwidth. Images are rounded to 8 bits
  first, as a real encoder sees them.
* ``low_light:F`` (0 < F <= 1) is a dark scene on a sensor without auto-gain: intensities are
  multiplied by ``F``, then each pixel's photon count is drawn from a Poisson law (shot
  noise) with :data:`FULL_WELL` photons at full intensity, then rounded to 8 bits. The image
  gets darker, noisier (relative noise grows as 1/sqrt(F)) and coarser (fewer grey levels).
* ``clean`` leaves the image as it is.

Every kind works the same on float tensors in [0, 1] (RGB, as training holds them) and on
OpenCV uint8 frames (BGR for three channels).
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

Kind = Literal["clean", "gaussian_noise", "gaussian_blur", "jpeg", "low_light"]
KINDS: tuple[str, ...] = ("clean", "gaussian_noise", "gaussian_blur", "jpeg", "low_light")
FULL_WELL = 255.0
"""Photons a pixel collects at full intensity for ``low_light`` (one per 8-bit grey level): at
F = 0.2 a mid-grey pixel collects about 25, a shot-noise std of 20 % of its value."""
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
        if self.kind == "jpeg":
            if not (float(self.level).is_integer() and 1 <= self.level <= 100):
                raise ValueError(f"jpeg quality should be an integer in 1..100, got {self.level!r}")
        elif self.kind == "low_light":
            if not (0 < self.level <= 1):
                raise ValueError(f"low_light factor should be in (0, 1], got {self.level!r}")
        elif self.kind != "clean" and not (0 < self.level <= 50):
            raise ValueError(f"{self.kind} level should be in (0, 50], got {self.level!r}")

    @classmethod
    def parse(cls, spec: str) -> Distortion:
        """``clean``, ``gaussian_noise:2`` or ``gaussian_blur:0.5``."""
        kind, _, level = spec.strip().partition(":")
        if kind not in KINDS:
            raise ValueError(
                f"unknown distortion {spec!r}: use clean, gaussian_noise:LEVEL, "
                "gaussian_blur:SIGMA, jpeg:QUALITY or low_light:FACTOR"
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

    @property
    def random(self) -> bool:
        """Whether two applications to one image differ (noise is drawn afresh each time);
        blur and JPEG re-encoding are functions of the image."""
        return self.kind in ("gaussian_noise", "low_light")

    def apply_tensor(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Distort float images in [0, 1], shape (..., C, H, W); returns a new tensor."""
        if self.kind == "clean":
            return images.clone()
        if self.kind == "gaussian_noise":
            noise = torch.randn(
                images.shape, generator=generator, dtype=images.dtype, device=images.device
            )
            return (images + noise * noise_std(self.level)).clamp_(0.0, 1.0)
        if self.kind == "low_light":
            photons = torch.poisson(images.clamp(0.0, 1.0) * (self.level * FULL_WELL), generator)
            return _to_8_bits(photons / FULL_WELL)
        if self.kind == "jpeg":
            return _jpeg_tensor(images, int(self.level))
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

        if self.kind == "low_light":
            rng = rng or np.random.default_rng()
            photons = rng.poisson(frame.astype(np.float64) * (self.level * FULL_WELL / 255.0))
            return np.clip(np.rint(photons * (255.0 / FULL_WELL)), 0, 255).astype(np.uint8)
        if self.kind == "jpeg":
            return _jpeg_frame(frame, int(self.level))

        k = blur_kernel_size(self.level)
        return cv2.GaussianBlur(
            frame, (k, k), sigmaX=self.level, sigmaY=self.level, borderType=cv2.BORDER_REFLECT_101
        )


def _to_8_bits(images: Tensor) -> Tensor:
    """Clip to [0, 1] and round to the 256 levels an 8-bit pixel holds."""
    return images.clamp(0.0, 1.0).mul(255.0).round_().div_(255.0)


def _jpeg_frame(frame: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    flag = cv2.IMREAD_GRAYSCALE if frame.ndim == 2 else cv2.IMREAD_COLOR
    out = cv2.imdecode(data, flag)
    return out if frame.ndim != 3 or frame.shape[2] != 1 else out[:, :, None]


def _jpeg_tensor(images: Tensor, quality: int) -> Tensor:
    """JPEG round trip of each (C, H, W) image; RGB is handed to OpenCV as BGR so the encoder's
    colour transform sees the channels it expects."""
    flat = images.reshape(-1, *images.shape[-3:])
    pixels = (flat.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for img in pixels:
        if img.shape[2] == 3:
            img = np.ascontiguousarray(img[:, :, ::-1])
            out.append(_jpeg_frame(img, quality)[:, :, ::-1].copy())
        else:
            out.append(_jpeg_frame(img, quality))
    back = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(images.dtype) / 255.0
    return back.reshape(images.shape)

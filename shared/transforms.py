"""From pixels to model input, the same way on the device, in training and in evaluation.

Images travel as float tensors in [0, 1] (N, 3, H, W) until the last step, so distortions are
applied on the same scale everywhere; only :func:`normalize` moves them to the model's scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["frame_to_tensor", "normalize", "resize"]


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(x - mean) / std per channel, for images in [0, 1] of shape (N, 3, H, W)."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s


def resize(images: Tensor, size: int) -> Tensor:
    """Bilinear resize of (N, C, H, W) to a square ``size`` (antialiased when shrinking)."""
    if images.shape[-2:] == (size, size):
        return images
    return torch.nn.functional.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )


def frame_to_tensor(frame: np.ndarray, size: int, *, bgr: bool = True) -> Tensor:
    """A uint8 OpenCV frame (H, W, 3) or grey (H, W) -> float (1, 3, size, size) in [0, 1]."""
    if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
        raise ValueError(f"frame should be uint8 (H, W[, 3]), got {frame.dtype} {frame.shape}")
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    elif bgr:
        frame = frame[:, :, ::-1]
    t = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float().div_(255.0)
    return resize(t.unsqueeze(0), size)

"""From pixels to model input in torch, for training and evaluation on batches of tensors.

Images travel as float tensors in [0, 1] (N, 3, H, W) until the last step, so distortions are
applied on the same scale everywhere; only :func:`normalize` moves them to the model's scale.
A camera frame on a node goes through :class:`shared.preprocess.FramePreprocessor`, the same
filter on numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from shared.preprocess import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalize", "resize"]


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

"""From pixels to model input, the same way on the device, in training and in evaluation.

Images travel as float tensors in [0, 1] (N, 3, H, W) until the last step, so distortions are
applied on the same scale everywhere; only :func:`normalize` moves them to the model's scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "FramePreprocessor", "normalize", "resize"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""torchvision's normalisation, which ImageNet weights expect; the default for every model."""


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


class FramePreprocessor:
    """Camera frame to model input, exactly as training prepared its images.

    Training resizes float images in [0, 1] with :func:`resize` and then normalises them with
    the checkpoint's mean and std; anything else on the node (OpenCV's resize, another
    interpolation, BGR order) would feed the network inputs it never saw, and the exits'
    confidences would no longer mean what the bandit learnt. The offline tools use this too,
    to judge a node on exactly the inputs it saw.
    """

    def __init__(self, input_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size = input_size
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, image: np.ndarray) -> Tensor:
        """(1, 3, size, size) float32 from an RGB uint8 frame (H, W, 3) or a grey one (H, W)."""
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"frame should be HxWx3 uint8, got {image.shape} {image.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
        return normalize(resize(x, self.size).clamp_(0, 1), self.mean, self.std)

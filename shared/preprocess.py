"""Camera frame to model input on numpy alone, exactly as training prepared its images.

Training resizes float images in [0, 1] with torch's antialiased bilinear filter and then
normalises them with the checkpoint's mean and std; anything else on the node (OpenCV's resize,
another interpolation, BGR order) would feed the network inputs it never saw, and the exits'
confidences would no longer mean what the bandit learnt. A node that runs an exported artefact
has no torch, so the same filter is written here: per output pixel, a triangle of half-width
``max(scale, 1)`` input pixels centred on it, weights normalised to one, computed in float32
as torch computes them (``tests/test_preprocess.py`` holds it to torch within 1e-5 on
held-out images). The offline tools use this too, to judge a node on exactly its inputs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "FramePreprocessor", "resize", "resize_weights"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""torchvision's normalisation, which ImageNet weights expect; the default for every model."""

_F = np.float32


@functools.lru_cache(maxsize=32)
def resize_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights), each (n_out, taps): output pixel i is the sum over k of
    ``weights[i, k] * input[indices[i, k]]`` (padding taps have weight 0)."""
    scale = _F(n_in / n_out)
    support = scale if scale >= 1 else _F(1)  # the triangle widens with the scale when shrinking
    inv = _F(1) / scale if scale >= 1 else _F(1)
    centres = scale * (np.arange(n_out, dtype=_F) + _F(0.5))
    lo = np.maximum((centres - support + _F(0.5)).astype(np.int64), 0)
    hi = np.minimum((centres + support + _F(0.5)).astype(np.int64), n_in)
    idx = lo[:, None] + np.arange(int((hi - lo).max()))[None, :]
    w = np.clip(_F(1) - np.abs((idx.astype(_F) - centres[:, None] + _F(0.5)) * inv), 0, None)
    w[idx >= hi[:, None]] = 0
    w = (w / w.sum(axis=1, keepdims=True, dtype=_F)).astype(_F)
    idx = np.minimum(idx, n_in - 1)
    idx.flags.writeable = w.flags.writeable = False  # cached: shared by every caller
    return idx, w


def _along_rows(x: np.ndarray, n_out: int) -> np.ndarray:
    """Resample the first axis of a 2-D array (rows gathered whole: fast in numpy)."""
    idx, w = resize_weights(x.shape[0], n_out)
    out = np.zeros((n_out, x.shape[1]), _F)
    tap = np.empty_like(out)
    for k in range(idx.shape[1]):
        np.multiply(x[idx[:, k]], w[:, k, None], out=tap)
        out += tap
    return out


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """(size, size, C) float32 from an (H, W, C) image, uint8 or float, on the image's scale."""
    h, w, c = image.shape
    if (h, w) == (size, size):
        return image.astype(_F)
    cols = np.ascontiguousarray(image.transpose(1, 0, 2)).reshape(w, h * c)
    across = _along_rows(cols, size).reshape(size, h, c)  # width resampled
    rows = np.ascontiguousarray(across.transpose(1, 0, 2)).reshape(h, size * c)
    return _along_rows(rows, size).reshape(size, size, c)


class FramePreprocessor:
    """An RGB camera frame to the (1, 3, size, size) float32 input the checkpoint expects."""

    def __init__(self, input_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size = input_size
        self.mean = np.asarray(mean, _F).reshape(3, 1, 1)
        self.std = np.asarray(std, _F).reshape(3, 1, 1)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """From an RGB uint8 frame (H, W, 3) or a grey one (H, W)."""
        return self.normalise(self.resize(image))

    def resize(self, image: np.ndarray) -> np.ndarray:
        """The first step: the frame resampled to (size, size, 3) float32 on its 0..255 scale
        (what a frame offload encodes: the network sees no more pixels than these)."""
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"frame should be HxWx3 uint8, got {image.shape} {image.dtype}")
        # Resampling the uint8 frame and then scaling to [0, 1] differs from training's order
        # (scale, then resample) by float rounding only, and gathers a quarter of the bytes.
        return resize(image, self.size)

    def normalise(self, resized: np.ndarray) -> np.ndarray:
        """The second step: :meth:`resize`'s output to the (1, 3, size, size) model input."""
        x = resized / _F(255)
        np.clip(x, 0, 1, out=x)
        chw = np.ascontiguousarray(x.transpose(2, 0, 1))
        chw -= self.mean
        chw /= self.std
        return chw[None]

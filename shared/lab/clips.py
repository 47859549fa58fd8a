"""Test clips a camera node can replay: held-out digits as a lossless video, with the scene
changing along the way (clean, then noise, then ...), and the whole network's answers on the
same frames to judge the node against.

The tests, the pipeline benchmark and the demo all feed nodes with these clips, so a node
reads exactly the pixels its ground truth was computed on (FFV1 is lossless).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from shared.checkpoint import Checkpoint
from shared.lab.datasets import load_dataset
from shared.lab.distortions import Distortion
from shared.preprocess import FramePreprocessor

__all__ = ["FRAME_SIZE", "DigitClip", "whole_model_predictions", "write_digit_clip"]

FRAME_SIZE = 64
"""Frame side in pixels: larger than the models' 32 px input, so the node really resizes."""


@dataclass(frozen=True)
class DigitClip:
    path: Path
    labels: np.ndarray
    frames: np.ndarray
    """(N, H, W, 3) RGB uint8 exactly as a reader of the (lossless) file gets them."""
    conditions: tuple[str, ...]
    """The distortion spec of each frame ("clean" where there is none)."""


def write_digit_clip(
    path: Path,
    n: int,
    *,
    seed: int = 0,
    schedule: Sequence[str] = ("clean", "gaussian_noise:2"),
    fps: float = 10.0,
    hold: int = 1,
) -> DigitClip:
    """Held-out digits (the test split of the bundled set) as a lossless video of ``n`` frames;
    the clip is cut into equal parts, one per ``schedule`` entry (``clean`` or a distortion
    spec such as ``gaussian_noise:2``). Each digit stays ``hold`` frames in view, as a thing in
    front of a camera does (each frame distorted anew)."""
    test = load_dataset("digits", FRAME_SIZE, seed=0).test
    rng = np.random.default_rng(seed)
    idx = np.repeat(rng.integers(0, len(test), -(-n // hold)), hold)[:n]
    images = torch.stack([test[int(i)][0] for i in idx])
    labels = np.array([int(test[int(i)][1]) for i in idx])
    gen = torch.Generator().manual_seed(seed)
    bounds = np.linspace(0, n, len(schedule) + 1).round().astype(int)
    conditions: list[str] = []
    for spec, lo, hi in zip(schedule, bounds[:-1], bounds[1:], strict=True):
        if spec != "clean" and hi > lo:
            images[lo:hi] = Distortion.parse(spec).apply_tensor(images[lo:hi], generator=gen)
        conditions += [spec] * int(hi - lo)
    frames = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (FRAME_SIZE, FRAME_SIZE)
    )
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write an FFV1 video to {path}")
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return DigitClip(path, labels, frames, tuple(conditions))


def whole_model_predictions(ckpt: Checkpoint, frames: np.ndarray) -> np.ndarray:
    """The final classifier's label for each frame, preprocessed exactly as a node does."""
    meta = ckpt.meta
    prep = FramePreprocessor(meta.input_size, meta.mean, meta.std)
    x = torch.from_numpy(np.concatenate([prep(f) for f in frames]))
    with torch.inference_mode():
        return ckpt.model(x)[-1].argmax(1).numpy()

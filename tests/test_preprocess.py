"""The node's numpy preprocessing is training's torch preprocessing, to float rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from device.onnx_edge import OnnxEdge
from shared.artefact import load_artefact
from shared.lab.datasets import load_dataset
from shared.preprocess import FramePreprocessor, resize_weights
from shared.transforms import normalize, resize


def _as_training_does(frame: np.ndarray, size: int, mean, std) -> np.ndarray:
    """What training and the torch node did: [0, 1] floats, antialiased resize, normalise."""
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0
    return normalize(resize(x, size).clamp_(0, 1), mean, std).numpy()


def _frames(n: int) -> list[np.ndarray]:
    """Held-out digits as a camera would give them: uint8 RGB, at several frame sizes."""
    test = load_dataset("digits", 8, 3).test  # the 8x8 originals, never trained on
    sizes = [(8, 8), (64, 64), (480, 640), (32, 32), (37, 101)]
    frames = []
    for i in range(n):
        img = (test[i][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        h, w = sizes[i % len(sizes)]
        frames.append(
            np.ascontiguousarray(
                np.kron(img, np.ones((h // 8 + 1, w // 8 + 1, 1)))[:h, :w].astype(np.uint8)
            )
        )
    return frames


@pytest.mark.parametrize("size", [32, 224])
def test_inputs_within_1e5_of_trainings_on_held_out_frames(size: int) -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    prep = FramePreprocessor(size, mean, std)
    for frame in _frames(25):
        got, want = prep(frame), _as_training_does(frame, size, mean, std)
        assert got.shape == want.shape == (1, 3, size, size) and got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-5, frame.shape


def test_same_predictions_as_the_torch_path(tiny_artefact) -> None:
    art = load_artefact(tiny_artefact)
    meta = art.meta
    edge = OnnxEdge.from_artefact(art, threads=1)
    prep = FramePreprocessor(meta.input_size, meta.mean, meta.std)
    for frame in _frames(60):
        for block in meta.arm_blocks:
            mine = edge(prep(frame), block)[1]
            theirs = edge(_as_training_does(frame, meta.input_size, meta.mean, meta.std), block)[1]
            assert [m.argmax() for m in mine] == [t.argmax() for t in theirs]


def test_grey_frames_and_bad_frames() -> None:
    prep = FramePreprocessor(32, (0.5,) * 3, (0.5,) * 3)
    grey = np.full((10, 12), 255, np.uint8)
    assert np.allclose(prep(grey), 1.0)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        prep(np.zeros((4, 4, 3), np.float32))


@pytest.mark.parametrize(("n_in", "n_out"), [(8, 32), (640, 224), (224, 224), (1920, 32)])
def test_resize_weights_sum_to_one_and_stay_inside(n_in: int, n_out: int) -> None:
    idx, w = resize_weights(n_in, n_out)
    assert np.allclose(w.sum(1), 1, atol=1e-6) and (w >= 0).all()
    assert idx.min() >= 0 and idx.max() < n_in

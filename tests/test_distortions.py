from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shared.lab.distortions import (
    BLUR_LEVELS,
    NOISE_LEVELS,
    Distortion,
    blur_kernel_size,
    noise_std,
)


def test_paper_levels() -> None:
    assert NOISE_LEVELS == (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
    assert BLUR_LEVELS == (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@pytest.mark.parametrize("level", [0.5, 1.0, 2.0])
def test_noise_std_on_tensors_is_level_over_ten(level: float) -> None:
    grey = torch.full((4, 3, 64, 64), 0.5)
    g = torch.Generator().manual_seed(1)
    out = Distortion("gaussian_noise", level).apply_tensor(grey, generator=g)
    # level 2 -> std 0.2: clipping at 0 and 1 (2.5 sigma away) barely matters
    assert float((out - grey).std()) == pytest.approx(noise_std(level), rel=0.03)
    assert out.min() >= 0 and out.max() <= 1


def test_noise_on_frames_uses_the_same_scale() -> None:
    frame = np.full((128, 128, 3), 128, np.uint8)
    out = Distortion("gaussian_noise", 1.0).apply_frame(frame, np.random.default_rng(0))
    assert out.dtype == np.uint8
    assert float((out.astype(float) - 128).std()) == pytest.approx(25.5, rel=0.03)


def test_noise_level_three_clips() -> None:
    out = Distortion.parse("gaussian_noise:3").apply_tensor(torch.full((1, 3, 64, 64), 0.9))
    assert float(out.max()) == 1.0


@pytest.mark.parametrize(("sigma", "k"), [(0.5, 5), (0.6, 5), (0.7, 7), (1.0, 7)])
def test_blur_kernel_side(sigma: float, k: int) -> None:
    assert blur_kernel_size(sigma) == k


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_blur_impulse_response_is_the_documented_gaussian(sigma: float) -> None:
    img = torch.zeros(1, 1, 21, 21)
    img[0, 0, 10, 10] = 1.0
    out = Distortion("gaussian_blur", sigma).apply_tensor(img)[0, 0]
    k = blur_kernel_size(sigma)
    r = torch.arange(k) - k // 2
    w = torch.exp(-(r.float() ** 2) / (2 * sigma**2))
    w = w / w.sum()
    want = torch.zeros(21, 21)
    want[10 - k // 2 : 10 + k // 2 + 1, 10 - k // 2 : 10 + k // 2 + 1] = torch.outer(w, w)
    assert torch.allclose(out, want, atol=1e-6)
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-5)


def test_blur_tensor_and_frame_agree() -> None:
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    d = Distortion.parse("gaussian_blur:0.8")
    by_cv = d.apply_frame(frame).astype(np.float32) / 255
    t = torch.from_numpy(frame).permute(2, 0, 1).float().unsqueeze(0) / 255
    by_torch = d.apply_tensor(t)[0].permute(1, 2, 0).numpy()
    assert np.abs(by_cv - by_torch).max() <= 1.5 / 255  # uint8 rounding only


def test_clean_is_identity_and_copies() -> None:
    x = torch.rand(1, 3, 8, 8)
    out = Distortion.parse("clean").apply_tensor(x)
    assert torch.equal(out, x) and out is not x
    f = np.zeros((4, 4, 3), np.uint8)
    assert np.array_equal(Distortion().apply_frame(f), f)


def test_parse_and_str_round_trip() -> None:
    for spec in ["clean", "gaussian_noise:2", "gaussian_blur:0.5", "gaussian_noise:1.5"]:
        assert str(Distortion.parse(spec)) == spec
    assert math.isclose(Distortion.parse("gaussian_blur:0.7").level, 0.7)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("fog:1", "unknown distortion 'fog:1'"),
        ("gaussian_noise:x", "needs a numeric level"),
        ("gaussian_noise:0", r"level should be in \(0, 50\], got 0.0"),
        ("clean:1", "clean takes no level"),
    ],
)
def test_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Distortion.parse(spec)

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shared.lab.distortions import (
    BLUR_LEVELS,
    FULL_WELL,
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
    for spec in [
        "clean",
        "gaussian_noise:2",
        "gaussian_blur:0.5",
        "gaussian_noise:1.5",
        "jpeg:10",
        "low_light:0.2",
    ]:
        assert str(Distortion.parse(spec)) == spec
    assert math.isclose(Distortion.parse("gaussian_blur:0.7").level, 0.7)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("fog:1", "unknown distortion 'fog:1'"),
        ("gaussian_noise:x", "needs a numeric level"),
        ("gaussian_noise:0", r"level should be in \(0, 50\], got 0.0"),
        ("clean:1", "clean takes no level"),
        ("jpeg:0", r"jpeg quality should be an integer in 1..100"),
        ("jpeg:10.5", r"jpeg quality should be an integer in 1..100"),
        ("jpeg:101", r"jpeg quality should be an integer in 1..100"),
        ("low_light:0", r"low_light factor should be in \(0, 1\]"),
        ("low_light:1.5", r"low_light factor should be in \(0, 1\]"),
        ("fog:1", "jpeg:QUALITY or low_light:FACTOR"),
    ],
)
def test_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Distortion.parse(spec)


def _photo(size: int = 64) -> np.ndarray:
    """A real photo (scikit-image's astronaut), shrunk: JPEG behaves on it as on camera frames."""
    import cv2
    from skimage import data

    rgb = cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


def test_jpeg_on_tensors_and_frames_is_the_same_round_trip() -> None:
    rgb = _photo()
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    out = Distortion.parse("jpeg:20").apply_tensor(x)
    bgr = Distortion.parse("jpeg:20").apply_frame(np.ascontiguousarray(rgb[:, :, ::-1]))
    from_frame = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1)
    assert torch.equal((out[0] * 255).round().to(torch.uint8), from_frame)
    assert out.shape == x.shape and out.dtype == x.dtype


def test_jpeg_error_grows_as_quality_falls() -> None:
    x = torch.from_numpy(_photo()).permute(2, 0, 1)[None].float() / 255.0
    err = {q: float((Distortion("jpeg", q).apply_tensor(x) - x).abs().mean()) for q in (95, 50, 10)}
    assert err[95] < err[50] < err[10]
    assert err[95] < 0.02 and err[10] > 0.03
    grey = Distortion("jpeg", 10).apply_frame(_photo()[:, :, 0])
    assert grey.shape == (64, 64) and grey.dtype == np.uint8


@pytest.mark.parametrize("factor", [0.5, 0.2, 0.05])
def test_low_light_is_darker_with_shot_noise_on_the_8_bit_grid(factor: float) -> None:
    level = 0.6
    grey = torch.full((8, 3, 64, 64), level)
    out = Distortion("low_light", factor).apply_tensor(
        grey, generator=torch.Generator().manual_seed(0)
    )
    photons = level * factor * FULL_WELL
    assert float(out.mean()) == pytest.approx(level * factor, rel=0.02)
    # Poisson: variance = mean photon count; rounding to 8 bits adds 1/12 of a grey level^2.
    expected_std = math.sqrt(photons + 1 / 12) / FULL_WELL
    assert float(out.std()) == pytest.approx(expected_std, rel=0.05)
    assert torch.equal(out * 255, (out * 255).round())
    frame = np.full((128, 128, 3), round(level * 255), np.uint8)
    f_out = Distortion("low_light", factor).apply_frame(frame, np.random.default_rng(0))
    assert f_out.dtype == np.uint8
    assert float(f_out.mean()) == pytest.approx(level * factor * 255, rel=0.02)
    assert float(f_out.std()) == pytest.approx(expected_std * 255, rel=0.05)


def test_new_kinds_work_in_schedules() -> None:
    from shared.lab.scenario import parse_schedule

    got = parse_schedule("schedule:clean:100,jpeg:10:200,low_light:0.2:300", 0)
    assert [(str(d), n) for d, n in got] == [
        ("clean", 100),
        ("jpeg:10", 200),
        ("low_light:0.2", 300),
    ]


@pytest.mark.parametrize(
    "spec", ["clean", "gaussian_noise:1", "gaussian_blur:1", "jpeg:10", "low_light:0.2"]
)
def test_random_says_whether_two_applications_to_one_image_differ(spec: str) -> None:
    """The results page takes the whole test set as the population of a distortion that is
    not random: that is right only if applying it twice gives the same image."""
    d = Distortion.parse(spec)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    differ = not torch.equal(d.apply_tensor(x, g), d.apply_tensor(x, g))
    assert d.random is differ

"""SSIM and MSE against a float64 transcription of Wang et al. 2004 and scikit-image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from fastcam import metrics


def _ssim_numpy(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """float64 transcription of Wang et al. 2004 with scipy's Gaussian filter (sigma 1.5, truncate 3.5)."""
    f = lambda a: ndimage.gaussian_filter(a, 1.5, truncate=3.5, mode="reflect")  # noqa: E731
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s[5:-5, 5:-5].mean())  # the border where the 11 x 11 window leaves the image is cropped


def test_ssim_against_float64_transcription() -> None:
    rng = np.random.default_rng(0)
    for shape in [(11, 11), (23, 17), (40, 33)]:
        x = rng.random(shape)
        y = np.clip(x + 0.2 * rng.standard_normal(shape), 0, 1)
        ours = metrics.ssim(torch.tensor(x)[None], torch.tensor(y)[None]).item()
        assert ours == pytest.approx(_ssim_numpy(x, y), abs=1e-12)
        ours32 = metrics.ssim(torch.tensor(x).float()[None], torch.tensor(y).float()[None]).item()
        assert ours32 == pytest.approx(_ssim_numpy(x, y), abs=1e-5)


def test_ssim_against_scikit_image() -> None:
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    x, y = rng.random((30, 26)), rng.random((30, 26))
    ref = skm.structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    assert metrics.ssim(torch.tensor(x)[None], torch.tensor(y)[None]).item() == pytest.approx(ref, abs=1e-12)


def test_ssim_by_hand_and_bad_input() -> None:
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(metrics.ssim(x, x), torch.ones(3))
    # constant 0 vs constant 1: only the luminance term survives, C1 / (1 + C1)
    c1 = 0.01**2
    s = metrics.ssim(torch.zeros(1, 12, 12, dtype=torch.float64), torch.ones(1, 12, 12, dtype=torch.float64))
    assert s.item() == pytest.approx(c1 / (1 + c1), rel=1e-12)
    torch.testing.assert_close(metrics.mse(torch.zeros(2, 3, 3), torch.full((2, 3, 3), 0.5)), torch.full((2,), 0.25))
    with pytest.raises(ValueError, match="at least 11 x 11"):
        metrics.ssim(torch.rand(1, 7, 7), torch.rand(1, 7, 7))
    with pytest.raises(ValueError, match="same shape"):
        metrics.ssim(torch.rand(1, 12, 12), torch.rand(1, 12, 13))

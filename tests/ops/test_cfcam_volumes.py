"""CF-CAM's cluster filter on volumes (B, C, d, h, w) against float64 oracles: scipy's 3-D Gaussian filter
(the paper variant) and the released code's map-sized kernel built in 3-D and applied with `F.conv3d`
(the reference variant), one cluster at a time."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from fastcam.ops import IMPORTANT, NOISE, cluster_filter_weights, gaussian_coverage, gaussian_coverage_nd, reference_filtered_mean
from fastcam_testkit.common import gen


def oracle_reference_3d(mean: torch.Tensor, spatial_sigma: float, range_sigma: float = 0.1) -> float:
    """The released "bilateral" kernel in 3-D: volume-sized, centred at (d/2, h/2, w/2), applied 'same'."""
    d, h, w = mean.shape
    z, y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) - n / 2 for n in (d, h, w)), indexing="ij")
    kernel = torch.exp(-(z**2 + y**2 + x**2) / (2 * spatial_sigma**2)) * torch.exp(-((mean - mean.mean()) ** 2) / (2 * range_sigma**2))
    kernel = kernel / (kernel.sum() + 1e-6)
    with warnings.catch_warnings():  # even kernel sizes: PyTorch notes it pads a copy, as intended here
        warnings.simplefilter("ignore", UserWarning)
        return float(F.conv3d(mean[None, None], kernel[None, None], padding="same").mean())


def oracle_weights(grads: np.ndarray, labels: np.ndarray, variant: str, sigma: float) -> np.ndarray:
    scores = grads.mean(axis=(1, 2, 3))
    for k in range(labels.max() + 1):
        members = labels == k
        mean = grads[members].mean(axis=0)
        if variant == "paper":
            scores[members] = scipy.ndimage.gaussian_filter(mean, sigma, mode="constant", cval=0.0, truncate=4.0).mean()
        else:
            scores[members] = oracle_reference_3d(torch.from_numpy(mean), sigma)
    keep = labels != NOISE
    weights = np.zeros_like(scores)
    e = np.exp(scores[keep] - scores[keep].max())
    weights[keep] = e / e.sum()
    return weights


@pytest.mark.parametrize("variant, sigma", [("paper", 1.0), ("paper", 0.7), ("reference", 5.0), ("reference", 1.5)])
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 7, 6)])
def test_volume_weights_match_float64_oracle(variant: str, sigma: float, shape: tuple[int, int, int]) -> None:
    channels = 12
    grads = torch.randn(2, channels, *shape, generator=gen(0), dtype=torch.float64) * 0.05
    # important, noise and three clusters (one a single channel), different per image
    labels = torch.tensor([[IMPORTANT, 0, 0, 1, NOISE, 1, 2, IMPORTANT, 0, NOISE, 1, 0],
                           [1, 1, IMPORTANT, 0, 0, NOISE, IMPORTANT, IMPORTANT, 2, 0, 1, NOISE]])
    expected = np.stack([oracle_weights(g.numpy(), lab.numpy(), variant, sigma) for g, lab in zip(grads, labels)])
    got = cluster_filter_weights(grads, labels, variant=variant, sigma=sigma)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-15)
    got32 = cluster_filter_weights(grads.float(), labels, variant=variant, sigma=sigma)
    np.testing.assert_allclose(got32.numpy(), expected, rtol=2e-5, atol=1e-7)
    assert (got[labels == NOISE] == 0).all()


def test_coverage_in_3d_is_the_mean_of_scipys_filter() -> None:
    vol = torch.randn(4, 5, 6, generator=gen(1), dtype=torch.float64)
    for sigma, truncate in ((1.0, 4.0), (0.6, 2.0), (2.5, 4.0)):
        coverage = gaussian_coverage_nd((4, 5, 6), sigma, truncate, dtype=torch.float64)
        explicit = scipy.ndimage.gaussian_filter(vol.numpy(), sigma, mode="constant", truncate=truncate).mean()
        np.testing.assert_allclose(float((vol * coverage).sum() / vol.numel()), explicit, rtol=1e-12)
    torch.testing.assert_close(gaussian_coverage(5, 6, 1.0, 4.0), gaussian_coverage_nd((5, 6), 1.0, 4.0))  # 2-D unchanged


def test_reference_filtered_mean_in_3d_and_2d() -> None:
    maps = torch.randn(3, 3, 4, 5, generator=gen(2), dtype=torch.float64) * 0.1
    got = reference_filtered_mean(maps, 2.0, dims=3)
    expected = torch.tensor([oracle_reference_3d(m, 2.0) for m in maps], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-15)
    as_2d = reference_filtered_mean(maps, 2.0)  # (3, 3) maps of 4 x 5: the 2-D reading of the same tensor
    assert as_2d.shape == (3, 3)
    with pytest.raises(ValueError, match="dims=2 or 3"):
        reference_filtered_mean(maps, dims=4)

"""Robustness of a gradient-based explanation to noise in the gradients (CF-CAM's robustness protocol)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from fastcam._validation import TargetsLike
from fastcam.metrics.ssim import mse, ssim

#: the noise levels of CF-CAM's evaluation: 0.1, then 1 to 10
DEFAULT_SIGMAS: tuple[float, ...] = (0.1, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)


@dataclass
class RobustnessResult:
    """SSIM and MSE between clean and noisy-gradient maps.

    Attributes:
        sigmas: (S,) the noise standard deviations.
        ssim: (S, B) SSIM (Wang et al. 2004, Gaussian window) of each image's clean vs noisy map.
        mse: (S, B) mean squared error of the same pairs.
        targets: (B,) the class explained (fixed from the clean run, so noise cannot change it).
    """

    sigmas: Tensor
    ssim: Tensor
    mse: Tensor
    targets: Tensor


def _check_gradient_method(cam: Any) -> None:
    # duck-typed: metrics sit below the methods and do not import them
    if not (getattr(cam, "uses_gradients", False) and callable(getattr(cam, "with_gradient_noise", None))):
        raise ValueError(f"{type(cam).__name__} does not use gradients: gradient-noise robustness is undefined for it")


def gradient_noise(cam: Any, sigma: float, generator: torch.Generator | None = None) -> Any:
    """A copy of the gradient method `cam` (a `fastcam.methods.base.GradientCAM`) that adds N(0, sigma^2)
    noise to its gradients before any weighting (`cam` itself is left unchanged, so it stays safe to share
    between threads)."""
    _check_gradient_method(cam)
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    return cam.with_gradient_noise(float(sigma), generator)


def gradient_noise_robustness(cam: Any, images: Tensor, targets: TargetsLike = None, *,
                              sigmas: Sequence[float] = DEFAULT_SIGMAS, seed: int = 0) -> RobustnessResult:
    r"""SSIM and MSE between the clean map and the map computed with noisy gradients (He et al., CF-CAM, 2025).

    For each $\sigma$, Gaussian noise $\varepsilon \sim \mathcal N(0, \sigma^2)$ is added to
    $\partial y^t / \partial A$ before the method forms its channel weights (for CF-CAM: before
    clustering-conditioned filtering, unlike the released code, which adds it after the weights where it
    has no effect). Both maps are the full-resolution maps in [0, 1] (upsampled to the image, per-image
    max-normalised), compared with `fastcam.metrics.ssim` (Gaussian window, data range 1) and MSE.
    The target classes are fixed from the clean explanation. Noise comes from a generator seeded with
    `seed` on the images' device, so results are reproducible.
    Works for every gradient method (Grad-CAM, Grad-CAM++, CF-CAM); Score-CAM and SoftCAM use no
    gradients and raise ValueError.
    """
    _check_gradient_method(cam)
    sigma_list = [float(s) for s in sigmas]
    if not sigma_list or any(not s >= 0 for s in sigma_list):
        raise ValueError(f"sigmas must be a non-empty sequence of values >= 0, got {list(sigmas)}")
    clean = gradient_noise(cam, 0.0).explain(images, targets)  # the clean map, whatever cam's own noise
    generator = torch.Generator(device=images.device).manual_seed(seed)
    ssims, mses = [], []
    for sigma in sigma_list:
        noisy = gradient_noise(cam, sigma, generator).explain(images, clean.targets).maps
        ssims.append(ssim(clean.maps, noisy))
        mses.append(mse(clean.maps, noisy))
    return RobustnessResult(sigmas=torch.tensor(sigma_list), ssim=torch.stack(ssims), mse=torch.stack(mses),
                            targets=clean.targets)

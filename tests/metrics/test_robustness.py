"""Gradient-noise robustness: the noise enters before the weights (hand oracle), seeded, gradient methods only."""
from __future__ import annotations

import pytest
import torch

import fastcam
from fastcam import metrics
from fastcam.models import tiny_resnet


def test_gradient_noise_enters_before_weighting() -> None:
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=3).eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    captured = {}
    handle = model.layer4.register_forward_hook(lambda m, i, o: captured.__setitem__("a", o))
    x = images.clone().requires_grad_(True)
    logits = model(x)
    targets = logits.argmax(1)
    (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), captured["a"])
    acts = captured["a"].detach()
    handle.remove()
    sigma = 0.7
    noise = torch.randn(grad.shape, generator=torch.Generator().manual_seed(5))
    weights = (grad + sigma * noise).mean(dim=(2, 3))  # oracle: noisy gradients, then Grad-CAM's weights
    expected = torch.relu(torch.einsum("bc,bchw->bhw", weights, acts))
    with fastcam.GradCAM(model, "layer4") as cam:
        noisy = metrics.gradient_noise(cam, sigma, torch.Generator().manual_seed(5))
        lowres = noisy.explain(images, targets).lowres
        assert cam.gradient_noise == 0.0 and cam.generator is None  # the original is left unchanged
    torch.testing.assert_close(lowres, expected, atol=1e-5, rtol=1e-4)


def test_gradient_noise_robustness() -> None:
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=3).eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with fastcam.GradCAMPlusPlus(model, "layer4") as cam:
        res = metrics.gradient_noise_robustness(cam, images, sigmas=(0.0, 0.1, 10.0), seed=3)
        again = metrics.gradient_noise_robustness(cam, images, sigmas=(0.0, 0.1, 10.0), seed=3)
    assert res.ssim.shape == res.mse.shape == (3, 2)
    torch.testing.assert_close(res.ssim[0], torch.ones(2))         # sigma 0: the clean map itself
    torch.testing.assert_close(res.mse[0], torch.zeros(2))
    assert bool((res.mse[2] > 0).all())                            # large noise changes the maps
    torch.testing.assert_close(res.ssim, again.ssim)               # seeded: reproducible
    with fastcam.ScoreCAM(model, "layer4") as cam, pytest.raises(ValueError, match="does not use gradients"):
        metrics.gradient_noise_robustness(cam, images)

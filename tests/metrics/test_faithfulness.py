"""Faithfulness metrics (deletion/insertion, Average Drop / Increase) against hand computations on tiny
constructed cases and a float64 numpy oracle."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from fastcam import metrics


class MeanModel(nn.Module):
    """Softmax of its logits is exactly (m, 1 - m), m = the image's mean pixel (pixels in [0, 1])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.double().mean(dim=(1, 2, 3)).clamp(1e-12, 1 - 1e-12)
        return torch.stack([m.log(), (1 - m).log()], dim=1)


IMAGE = torch.tensor([[0.8, 0.2], [0.6, 0.4]], dtype=torch.float64).view(1, 1, 2, 2)
MAP = torch.tensor([[[4.0, 1.0], [3.0, 2.0]]], dtype=torch.float64)


def test_deletion_insertion_by_hand() -> None:
    # deletion removes 0.8, 0.6, 0.4, 0.2 in turn: mean 0.5, 0.3, 0.15, 0.05, 0
    res = metrics.deletion(MeanModel(), IMAGE, MAP, targets=0, steps=4)
    torch.testing.assert_close(res.curve.double(), torch.tensor([[0.5, 0.3, 0.15, 0.05, 0.0]], dtype=torch.float64))
    assert res.auc.item() == pytest.approx(0.25 * (0.4 + 0.225 + 0.1 + 0.025), abs=1e-6)  # 0.1875
    torch.testing.assert_close(res.fractions, torch.tensor([0, 0.25, 0.5, 0.75, 1.0]))
    # insertion onto zeros puts them back in the same order: 0, 0.2, 0.35, 0.45, 0.5
    res = metrics.insertion(MeanModel(), IMAGE, MAP, targets=0, steps=4, baseline="zeros")
    torch.testing.assert_close(res.curve.double(), torch.tensor([[0.0, 0.2, 0.35, 0.45, 0.5]], dtype=torch.float64))
    assert res.auc.item() == pytest.approx(0.3125, abs=1e-6)
    # the target probability is the other class's for target 1
    res = metrics.deletion(MeanModel(), IMAGE, MAP, targets=1, steps=4)
    assert res.auc.item() == pytest.approx(1 - 0.1875, abs=1e-6)


def test_deletion_batched_chunks_and_uneven_steps_match_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 2, 3, 5, generator=g, dtype=torch.float64)        # 15 pixels, 2 channels
    maps = torch.rand(3, 3, 5, generator=g, dtype=torch.float64)
    steps = 4                                                                 # 15 / 4 is not whole
    full = metrics.deletion(MeanModel(), images, maps, targets=0, steps=steps, batch_size=1000)
    chunked = metrics.deletion(MeanModel(), images, maps, targets=0, steps=steps, batch_size=4)
    torch.testing.assert_close(full.curve, chunked.curve)
    for b in range(3):  # float64 numpy oracle
        x, s = images[b].numpy(), maps[b].numpy().ravel()
        order = np.argsort(-s, kind="stable")
        curve = []
        for k in range(steps + 1):
            keep = np.ones(15, bool)
            keep[order[: (k * 15) // steps]] = False
            curve.append((x.reshape(2, -1) * keep).mean())
        np.testing.assert_allclose(full.curve[b].numpy(), curve, atol=1e-6)
        assert full.auc[b].item() == pytest.approx(np.trapezoid(curve, dx=1 / steps), abs=1e-6)


def test_low_resolution_map_is_upsampled_and_predicted_target_default() -> None:
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lowres = torch.rand(2, 2, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    up = torch.nn.functional.interpolate(lowres.unsqueeze(1), size=(8, 8), mode="bilinear", align_corners=False)
    a = metrics.deletion(MeanModel(), images, lowres, steps=8)
    b = metrics.deletion(MeanModel(), images, up.squeeze(1), steps=8)
    torch.testing.assert_close(a.curve, b.curve)
    predicted = MeanModel()(images).argmax(1)
    torch.testing.assert_close(a.targets, predicted)


def test_blur_baseline_matches_scipy() -> None:
    x = torch.rand(1, 2, 15, 13, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = np.arange(11) - 5.0
    k = np.exp(-0.5 * (t / 5.0) ** 2)
    k /= k.sum()
    for c in range(2):
        ref = ndimage.correlate(x[0, c].numpy(), np.outer(k, k), mode="nearest")
        np.testing.assert_allclose(metrics.gaussian_blur(x)[0, c].numpy(), ref, atol=1e-12)
    assert torch.equal(metrics.make_baseline(x, 0.25), torch.full_like(x, 0.25))
    torch.testing.assert_close(metrics.make_baseline(x, "mean")[0, :, 3, 4], x.mean(dim=(2, 3))[0])


def test_perturbation_bad_input() -> None:
    with pytest.raises(ValueError, match="steps"):
        metrics.deletion(MeanModel(), IMAGE, MAP, steps=0)
    with pytest.raises(ValueError, match="baseline"):
        metrics.insertion(MeanModel(), IMAGE, MAP, baseline="gray")
    with pytest.raises(ValueError, match="maps has 2 maps for a batch of 1"):
        metrics.deletion(MeanModel(), IMAGE, MAP.repeat(2, 1, 1))
    with pytest.raises(ValueError, match="NaN"):
        metrics.deletion(MeanModel(), IMAGE, torch.full_like(MAP, float("nan")))
    with pytest.raises(TypeError, match="maps must be a torch.Tensor"):
        metrics.deletion(MeanModel(), IMAGE, MAP.numpy())


# ---------------------------------------------------------------- Average Drop / Increase
def test_average_drop_and_increase_by_hand() -> None:
    cam_map = torch.tensor([[[1.0, 0.5], [0.0, 0.25]]], dtype=torch.float64)
    # class 0: Y = 0.5, O = mean(0.8, 0.1, 0, 0.1) = 0.25 -> drop 50 %, no increase
    res = metrics.average_drop_increase(MeanModel(), IMAGE, cam_map, targets=0)
    assert res.clean.item() == pytest.approx(0.5) and res.explained.item() == pytest.approx(0.25)
    assert res.drop.item() == pytest.approx(50.0) and res.increase.item() == 0.0
    # class 1: Y = 0.5, O = 0.75 -> drop clipped at 0, increase
    res = metrics.average_drop_increase(MeanModel(), IMAGE, cam_map, targets=1)
    assert res.drop.item() == 0.0 and res.increase.item() == 1.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.average_drop_increase(MeanModel(), IMAGE, cam_map * 2)

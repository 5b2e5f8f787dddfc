"""The released-code CF-CAM loop (the benchmark's baseline) against fastcam's CFCAM(variant="reference")."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastcam
from fastcam.benchmark import ReleasedCFCAMLoop
from fastcam.models import tiny_resnet


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_released_loop_matches_reference_cfcam() -> None:
    """The benchmark's baseline must compute what CFCAM(variant="reference") computes (else the speed-up
    would compare different work)."""
    if getattr(fastcam, "CFCAM", None) is None:
        pytest.skip("fastcam.CFCAM not built yet")
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=4, width=8).eval()
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with fastcam.CFCAM(model, "layer4", variant="reference", cluster_backend="sklearn") as cam:
        exp = cam.explain(images)
    loop = ReleasedCFCAMLoop(model, model.layer4)
    try:
        maps = np.stack([loop(images[i:i + 1], int(exp.targets[i])) for i in range(3)])
    finally:
        loop.close()
    assert all(p.grad is None for p in model.parameters())       # close() clears the full backward's .grad
    # the released code divides by the max without subtracting the min, as fastcam does
    np.testing.assert_allclose(maps, exp.maps.numpy(), atol=2e-5)

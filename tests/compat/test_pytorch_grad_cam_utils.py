"""`fastcam.compat.pytorch_grad_cam.utils.image` against pytorch-grad-cam 1.5.7's `utils.image` (imported
with the test-only torchvision stand-in of `fastcam_testkit.pgc`; see tests/compat/test_pytorch_grad_cam.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastcam.compat.pytorch_grad_cam.utils import image as compat_image
from fastcam.compat.pytorch_grad_cam.utils.reshape_transforms import swinT_reshape_transform, vit_reshape_transform
from fastcam_testkit.pgc import pytorch_grad_cam_or_skip

pytorch_grad_cam_or_skip()
import pytorch_grad_cam.utils.image as pgc_image  # noqa: E402
import pytorch_grad_cam.utils.reshape_transforms as pgc_reshape  # noqa: E402


@pytest.mark.parametrize("use_rgb", [False, True])
@pytest.mark.parametrize("image_weight", [0.5, 0.2])
def test_show_cam_on_image_is_pytorch_grad_cams(use_rgb, image_weight):
    rng = np.random.default_rng(0)
    rgb, mask = rng.random((20, 16, 3), dtype=np.float32), rng.random((20, 16), dtype=np.float32)
    ours = compat_image.show_cam_on_image(rgb, mask, use_rgb=use_rgb, image_weight=image_weight)
    theirs = pgc_image.show_cam_on_image(rgb, mask, use_rgb=use_rgb, image_weight=image_weight)
    assert ours.dtype == np.uint8 and np.array_equal(ours, theirs)
    with pytest.raises(ValueError, match="range"):
        compat_image.show_cam_on_image(rgb * 2, mask)


@pytest.mark.parametrize("target_size", [None, (32, 40), (5, 3)])
def test_scale_cam_image_matches_opencv_resizing(target_size):
    cams = np.random.default_rng(1).random((3, 10, 8), dtype=np.float32) * 5 - 1
    ours, theirs = compat_image.scale_cam_image(cams, target_size), pgc_image.scale_cam_image(cams, target_size)
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_preprocess_image_is_totensor_then_normalize():
    """pytorch-grad-cam's preprocess_image runs torchvision's ToTensor + Normalize (here the stand-in), so
    the expected values are computed by hand: uint8 / 255, then (x - mean) / std, channels first."""
    img = np.random.default_rng(2).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    ours = compat_image.preprocess_image(img, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    expected = (torch.from_numpy(img).permute(2, 0, 1).float() / 255 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) \
        / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    torch.testing.assert_close(ours, expected[None])
    floats = np.float32(img) / 255
    torch.testing.assert_close(compat_image.preprocess_image(floats), (torch.from_numpy(floats).permute(2, 0, 1)[None] - 0.5) / 0.5)


def test_deprocess_image_and_reshape_transforms_are_pytorch_grad_cams():
    img = np.random.default_rng(3).normal(size=(4, 4, 3)).astype(np.float32)
    assert np.array_equal(compat_image.deprocess_image(img), pgc_image.deprocess_image(img))
    tokens = torch.randn(2, 1 + 14 * 14, 8)
    torch.testing.assert_close(vit_reshape_transform(tokens), pgc_reshape.vit_reshape_transform(tokens))
    swin = torch.randn(2, 49, 8)
    torch.testing.assert_close(swinT_reshape_transform(swin), pgc_reshape.swinT_reshape_transform(swin))

"""Eigen-CAM and Eigen-Grad-CAM against float64 hand computations of pytorch-grad-cam's
`get_2d_projection` (numpy SVD), with fastcam's documented sign convention."""
import numpy as np
import pytest
import torch

import fastcam
from fastcam.ops import first_component
from fastcam_testkit.pgc import activations_and_grads, cam_image, get_2d_projection

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("layer", ["layer2", "layer3", "layer4"])
@pytest.mark.parametrize("method", ["eigencam", "eigengradcam"])
def test_float64_hand(method, layer, resnet, images):
    model, x = resnet.double(), images.double()
    targets = torch.tensor([1, 3, 0, 2])
    (acts,), (grads,), _ = activations_and_grads(model, [layer], x, targets)
    expected = torch.relu(cam_image(method, acts, grads))
    cls = {"eigencam": fastcam.EigenCAM, "eigengradcam": fastcam.EigenGradCAM}[method]
    got = cls(model, layer).explain(x, targets).lowres.double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6 * float(expected.max()))
    assert (expected.flatten(1).amax(1) > 0).all()


def test_sign_convention_and_pytorch_grad_cam_up_to_sign():
    """The projection equals pytorch-grad-cam's up to a sign per image; the sign is the one under which the
    uncentred projection sums to >= 0, whatever sign the SVD returned (flipping the input's principal
    direction cannot flip ours)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(6, 9, 5, 4, generator=gen, dtype=torch.float64) + torch.linspace(-1, 2, 9, dtype=torch.float64)[None, :, None, None]
    ours = first_component(x).double()
    theirs = torch.from_numpy(get_2d_projection(x.numpy()))
    sign = torch.sign((ours * theirs).flatten(1).sum(1))
    torch.testing.assert_close(ours, sign[:, None, None] * theirs, rtol=1e-5, atol=1e-6)
    flat = x.flatten(2).transpose(1, 2)  # (B, hw, C)
    centred = flat - flat.mean(1, keepdim=True)
    for b in range(6):
        v = torch.linalg.lstsq(centred[b], ours[b].flatten()[:, None]).solution[:, 0]  # ours = centred @ v
        assert float((flat[b] @ v).sum()) >= 0


@pytest.mark.parametrize("along", [1.0, -1.0])
def test_sign_follows_the_mean_activation(along):
    """Rank-one data mu + t d: the component is +-d; ours points along the mean (d.mu > 0 -> +t)."""
    gen = torch.Generator().manual_seed(2)
    mu = torch.rand(7, generator=gen, dtype=torch.float64) + 0.5  # all positive, like post-ReLU means
    d = along * (torch.rand(7, generator=gen, dtype=torch.float64) + 0.1)
    t = torch.randn(20, generator=gen, dtype=torch.float64)
    x = (mu[:, None] + d[:, None] * t[None, :]).view(1, 7, 4, 5)
    got = first_component(x)[0].flatten().double()
    expected = along * (t - t.mean()) * d.norm()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_eigen_smooth_is_refused_by_eigen_methods(resnet):
    for cls in (fastcam.EigenCAM, fastcam.EigenGradCAM):
        with pytest.raises(ValueError, match="principal component"):
            cls(resnet, "layer4", eigen_smooth=True)


def test_eigencam_ignores_the_target(resnet, images):
    cam = fastcam.EigenCAM(resnet, "layer3")
    a, b = cam.explain(images, 0), cam.explain(images, 3)
    torch.testing.assert_close(a.maps, b.maps)
    assert a.targets.tolist() == [0] * 4 and b.targets.tolist() == [3] * 4
    assert not np.allclose(fastcam.EigenGradCAM(resnet, "layer3")(images, 0), fastcam.EigenGradCAM(resnet, "layer3")(images, 3))

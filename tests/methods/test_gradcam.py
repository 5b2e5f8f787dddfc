"""Grad-CAM and Grad-CAM++ against independent oracles: captum, torchcam and float64 hand computations."""
import pytest
import torch
import torch.nn.functional as F

import fastcam
from fastcam.models import tiny_resnet


def _minmax(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    low = flat.min(1).values[:, None, None]
    return (x - low) / ((x.flatten(1).max(1).values[:, None, None] - low) + 1e-8)


@pytest.mark.parametrize("layer", ["layer4", "layer3", "layer4.0.conv2"])
def test_gradcam_matches_captum(resnet, images, layer):
    from captum.attr import LayerGradCam

    targets = torch.tensor([0, 3, 1, 4])
    module = dict(resnet.named_modules())[layer]
    expected = LayerGradCam(resnet, module).attribute(images, target=targets, relu_attributions=True)[:, 0]
    exp = fastcam.GradCAM(resnet, layer).explain(images, targets)
    assert exp.lowres.shape == expected.shape
    torch.testing.assert_close(exp.lowres, expected.detach(), rtol=1e-5, atol=1e-6)
    assert exp.lowres.abs().max() > 0  # the comparison is not vacuous


def test_gradcam_matches_torchcam(resnet, images):
    from torchcam.methods import GradCAM as TorchcamGradCAM

    ours = fastcam.GradCAM(resnet, "layer4").explain(images, [2, 2, 0, 1]).lowres
    with TorchcamGradCAM(resnet, target_layer="layer4") as extractor:
        out = resnet(images)
        (theirs,) = extractor([2, 2, 0, 1], out)
    torch.testing.assert_close(_minmax(ours), theirs.detach(), rtol=1e-4, atol=1e-5)


def test_gradcam_float64_hand_computation(images):
    """Grad-CAM by hand in float64: gradients via a second forward split at the target layer."""
    torch.manual_seed(3)
    model = tiny_resnet(num_classes=4).eval().double()
    x = images.double()
    head = lambda a: model.fc(torch.flatten(model.avgpool(a), 1))  # noqa: E731
    with torch.no_grad():
        stem = model.layer3(model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x)))))))
        acts = model.layer4(stem)
    acts = acts.clone().requires_grad_(True)
    targets = torch.tensor([1, 0, 3, 2])
    (grad,) = torch.autograd.grad(head(acts).gather(1, targets[:, None]).sum(), acts)
    expected = torch.relu((grad.mean((2, 3))[:, :, None, None] * acts).sum(1)).detach()
    got = fastcam.GradCAM(model, "layer4").explain(x, targets).lowres.double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_gradcampp_float64_hand_computation():
    """Grad-CAM++ closed form, computed element by element in float64 on a model with known gradients."""
    torch.manual_seed(5)
    acts = torch.randn(2, 3, 4, 5, dtype=torch.float64)

    class Quadratic(torch.nn.Module):
        # logits_k = sum_c sum_ij  v[k,c,i,j] * a_cij  +  0.5 * u[k,c] a_cij^2 : gradients vary per pixel
        def __init__(self) -> None:
            super().__init__()
            self.feat = torch.nn.Identity()
            self.v = torch.nn.Parameter(torch.randn(3, 3, 4, 5, dtype=torch.float64))
            self.u = torch.nn.Parameter(torch.randn(3, 3, dtype=torch.float64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.feat(x)
            lin = torch.einsum("kcij,bcij->bk", self.v, a)
            quad = 0.5 * torch.einsum("kc,bcij->bk", self.u, a * a)
            return lin + quad

    model = Quadratic()
    targets = [2, 1]
    got = fastcam.GradCAMPlusPlus(model, "feat").explain(acts, targets).lowres.double()
    expected = torch.zeros(2, 4, 5, dtype=torch.float64)
    for b in range(2):
        k = targets[b]
        for c in range(3):
            a = acts[b, c]
            g = (model.v[k, c] + model.u[k, c] * a).detach()  # dy/da
            total = a.sum()
            w = 0.0
            for i in range(4):
                for j in range(5):
                    g1 = float(g[i, j])
                    denom = 2 * g1**2 + float(total) * g1**3
                    alpha = g1**2 / denom if denom != 0 else 0.0
                    w += alpha * max(g1, 0.0)
            expected[b] += w * a
    expected = torch.relu(expected)
    torch.testing.assert_close(got, expected, rtol=2e-5, atol=1e-6)
    assert expected.max() > 0


def test_maps_are_upsampled_normalised_lowres(resnet, images):
    exp = fastcam.GradCAMPlusPlus(resnet, "layer3").explain(images)
    up = F.interpolate(exp.lowres[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    expected = up / up.flatten(1).max(1).values[:, None, None]
    torch.testing.assert_close(exp.maps, expected)
    assert exp.maps.shape == (4, 64, 48) and exp.maps.dtype == torch.float32
    torch.testing.assert_close(exp.maps.flatten(1).max(1).values, torch.ones(4))

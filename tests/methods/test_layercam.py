"""Layer-CAM against torchcam's LayerCAM and a float64 hand computation of pytorch-grad-cam's formula."""
import pytest
import torch

import fastcam
from fastcam_testkit.pgc import activations_and_grads, cam_image

pytestmark = pytest.mark.usefixtures("one_thread")


def _per_image_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def _minmax(x: torch.Tensor) -> torch.Tensor:
    low = x.flatten(1).min(1).values[:, None, None]
    return (x - low) / (x.flatten(1).max(1).values[:, None, None] - low + 1e-8)


@pytest.mark.parametrize("layer", ["layer4", "layer3", "layer2"])
@pytest.mark.parametrize("method", ["LayerCAM", "XGradCAM"])
def test_matches_torchcam_at_layer_resolution(method, layer, resnet, images):
    import torchcam.methods

    with torch.no_grad():
        targets = resnet(images).argmax(1).tolist()  # the predicted classes: positive evidence somewhere
    ours = getattr(fastcam, method)(resnet, layer).explain(images, targets).lowres
    with getattr(torchcam.methods, method)(resnet, target_layer=layer) as extractor:
        (theirs,) = extractor(targets, resnet(images))
    live = theirs.flatten(1).amax(1) > 0  # an all-zero map (every weighted sum negative) has no correlation
    assert ours.shape == theirs.shape and live.sum() >= 3  # not vacuous
    assert _per_image_correlation(ours[live], theirs[live]).min() > 0.999
    torch.testing.assert_close(_minmax(ours), theirs.detach(), rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("eigen_smooth", [False, True])
@pytest.mark.parametrize("layer", ["layer3", "layer2"])
def test_layercam_float64_hand(layer, eigen_smooth, resnet, images):
    model, x = resnet.double(), images.double()
    targets = torch.tensor([3, 1, 0, 2])
    (acts,), (grads,), _ = activations_and_grads(model, [layer], x, targets)
    expected = torch.relu(cam_image("layercam", acts, grads, eigen_smooth))
    got = fastcam.LayerCAM(model, layer, eigen_smooth=eigen_smooth).explain(x, targets).lowres.double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7 * float(expected.max()))
    assert expected.max() > 0

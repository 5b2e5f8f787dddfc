"""Multi-layer fusion against a float64 hand computation of pytorch-grad-cam's aggregation (with fastcam's
max-normalisation in place of its min-max scaling), in one forward and one backward for all layers."""
import pytest
import torch

from fastcam.methods.registry import method_class
from fastcam_testkit.pgc import activations_and_grads, aggregate, cam_image

pytestmark = pytest.mark.usefixtures("one_thread")

LAYERS = ["layer2", "layer3", "layer4"]


@pytest.mark.parametrize("method", ["gradcam", "layercam", "xgradcam"])
def test_fusion_float64_hand(method, resnet, images):
    model, x = resnet.double(), images.double()
    targets = torch.tensor([1, 2, 3, 4])
    acts, grads, _ = activations_and_grads(model, LAYERS, x, targets)
    cams = [cam_image(method, a, g) for a, g in zip(acts, grads)]
    calls = {"forward": 0, "backward": 0}
    model.register_forward_pre_hook(lambda m, i: calls.__setitem__("forward", calls["forward"] + 1))
    model.fc.register_full_backward_hook(lambda m, gi, go: calls.__setitem__("backward", calls["backward"] + 1))
    got = method_class(method)(model, LAYERS).explain(x, targets)
    assert calls == {"forward": 1, "backward": 1}
    torch.testing.assert_close(got.maps.double(), aggregate(cams, tuple(x.shape[-2:])), rtol=1e-5, atol=1e-6)
    finest = tuple(acts[0].shape[-2:])
    assert got.lowres.shape == (4, *finest)
    torch.testing.assert_close(got.lowres.double(), aggregate(cams, finest), rtol=1e-5, atol=1e-6)


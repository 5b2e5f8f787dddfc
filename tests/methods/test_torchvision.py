"""Real torchvision models (random weights, nothing downloaded), where torchvision is importable.

torchvision has no build for our CPU torch, so this module skips on CI and runs on machines that have it
(the GPU machine): the plain-torch models elsewhere in the suite copy its layout, and this is the check that
the copy is faithful where it matters.
"""
import pytest
import torch

import fastcam

tv_models = pytest.importorskip("torchvision.models")

CASES = [("resnet50", "layer4"), ("vgg16", "features.29"), ("densenet121", "features.norm5")]
METHODS = [fastcam.GradCAM, fastcam.GradCAMPlusPlus, fastcam.CFCAM]


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def model_and_layer(request):
    name, layer = request.param
    torch.manual_seed(0)
    model = getattr(tv_models, name)(weights=None, num_classes=3).eval()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(dev), layer


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.__name__)
def test_posthoc_methods_on_torchvision_models(model_and_layer, method):
    model, layer = model_and_layer
    x = torch.randn(2, 3, 96, 96, device=next(model.parameters()).device)
    exp = method(model, layer).explain(x)
    assert exp.maps.shape == (2, 96, 96) and torch.isfinite(exp.maps).all()
    assert all(p.grad is None for p in model.parameters())


def test_scorecam_on_torchvision_resnet(model_and_layer):
    model, layer = model_and_layer
    x = torch.randn(1, 3, 64, 64, device=next(model.parameters()).device)
    maps = fastcam.ScoreCAM(model, layer, batch_size=256)(x)
    assert maps.shape == (1, 64, 64) and torch.isfinite(maps).all()


def test_softcam_convert_torchvision_keeps_backbone(model_and_layer):
    model, _ = model_and_layer
    x = torch.randn(2, 3, 96, 96, device=next(model.parameters()).device)
    net = fastcam.softcam.convert(model, 3).eval()
    logits, evidence = net(x)
    assert logits.shape == (2, 3) and evidence.shape[:2] == (2, 3)
    torch.testing.assert_close(logits, evidence.mean((2, 3)))
    maps = fastcam.SoftCAM(net)(x)
    assert maps.shape == (2, 96, 96) and torch.isfinite(maps).all()

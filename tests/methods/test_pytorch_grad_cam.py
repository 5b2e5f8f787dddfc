"""fastcam against pytorch-grad-cam itself (PyPI `grad-cam` 1.5.7).

pytorch-grad-cam imports torchvision, OpenCV and ttach at import time; torchvision does not import with
our CPU torch, so `fastcam_testkit.pgc.import_pytorch_grad_cam` gives it a TEST-ONLY stand-in holding
the few names it touches (README's set-up installs grad-cam with --no-deps; without it these tests skip,
and fail under CI). The float64 hand computations of its formulas (test_hirescam.py, test_eigencam.py,
test_ablationcam.py, test_fusion.py, test_smoothing.py) run everywhere; this module checks that those
formulas are what the package computes. pytorch-grad-cam min-max scales its maps and keeps the SVD's
sign; both are accounted for below.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastcam
from fastcam.ops import first_component
from fastcam.methods.registry import method_class
from fastcam_testkit.pgc import activations_and_grads, pytorch_grad_cam_or_skip

pgc = pytorch_grad_cam_or_skip()
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = {
    "gradcam": "GradCAM", "xgradcam": "XGradCAM", "layercam": "LayerCAM",
    "hirescam": "HiResCAM", "gradcamelementwise": "GradCAMElementWise", "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM", "ablationcam": "AblationCAM",
}


def _minmax(x: torch.Tensor) -> torch.Tensor:
    low = x.flatten(1).min(1).values[:, None, None]
    return (x - low) / (x.flatten(1).max(1).values[:, None, None] - low + 1e-7)


def _theirs(pgc_class: str, model, layers, images, targets, **call) -> torch.Tensor:  # noqa: ANN001
    cam = getattr(pgc, pgc_class)(model=model, target_layers=layers)
    try:
        out = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets], **call)
    finally:
        cam.activations_and_grads.release()
    return torch.from_numpy(np.asarray(out, dtype=np.float32))


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_single_layer_maps_match(name, resnet, images):
    targets = torch.tensor([1, 0, 4, 2])
    cls = method_class(name)
    ours = _minmax(cls(resnet, "layer3").explain(images, targets).maps)
    theirs = _theirs(PAIRS[name], resnet, [resnet.layer3], images, targets)
    if name.startswith("eigen"):  # pytorch-grad-cam keeps the SVD's arbitrary sign: accept either per image
        (acts,), (grads,), _ = activations_and_grads(resnet, ["layer3"], images, targets)
        flipped = torch.relu(-first_component(grads * acts if name == "eigengradcam" else acts))
        flipped = _minmax(F.interpolate(flipped[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0])
        ok = [(torch.allclose(o, t, atol=1e-4) or torch.allclose(f, t, atol=1e-4)) for o, f, t in zip(ours, flipped, theirs)]
        assert all(ok)
        return
    if name == "ablationcam":  # pytorch-grad-cam divides by y, fastcam by |y|: equal where y > 0 only
        with torch.no_grad():
            positive = resnet(images).gather(1, targets[:, None])[:, 0] > 0
        assert positive.any() and not positive.all()
        ours, theirs = ours[positive], theirs[positive]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def _correlation(ours: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
    a, b = ours.flatten(1).double(), theirs.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def test_gradcampp_differs_only_by_the_epsilon(resnet, images):
    """pytorch-grad-cam adds 1e-6 to Grad-CAM++'s alpha denominator (fastcam: none), which matters where
    gradients are small: the maps correlate, they are not equal."""
    targets = torch.tensor([1, 0, 4, 2])
    theirs = _theirs("GradCAMPlusPlus", resnet, [resnet.layer3], images, targets)
    ours = fastcam.GradCAMPlusPlus(resnet, "layer3").explain(images, targets).maps
    assert _correlation(ours, theirs).min() > 0.99


@pytest.mark.parametrize("name", ["gradcam", "layercam"])
def test_multi_layer_and_aug_smooth_agree_up_to_normalisation(name, resnet, images):
    targets = torch.tensor([3, 1, 1, 0])
    cls = method_class(name)
    for call, kwargs in (({}, {}), ({"aug_smooth": True}, {"aug_smooth": True})):
        ours = cls(resnet, ["layer2", "layer3"], **kwargs).explain(images, targets).maps
        theirs = _theirs(PAIRS[name], resnet, [resnet.layer2, resnet.layer3], images, targets, **call)
        assert _correlation(ours, theirs).min() > 0.99  # pytorch-grad-cam min-max scales, fastcam max-scales

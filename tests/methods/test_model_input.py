"""Model-side bad input gets a clear error naming the problem (issue 10), and what is valid works."""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import fastcam
from fastcam import softcam
from fastcam.methods import registry
from fastcam.methods.gradcampp import gradcampp_weights
from fastcam.models import tiny_resnet

#: every post-hoc method of the registry but the slow ones (SS-CAM, IS-CAM: Score-CAM's path, many forwards)
METHODS = [registry.method_class(name) for name in registry.method_names(post_hoc=True, slow=False)]


def _make(method, model, layer="layer4", **kw):  # noqa: ANN001, ANN202
    if "batch_size" in inspect.signature(method).parameters:  # many-forward methods: one chunk
        kw.setdefault("batch_size", 64)
    if "num_samples" in inspect.signature(method).parameters:
        kw.setdefault("num_samples", 1)
    if "generator" in inspect.signature(method).parameters:  # seeded: the same noise on every call
        kw.setdefault("generator", 0)
    return method(model, layer, **kw)


# ------------------------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_image_dtype_must_match_the_model(method, dtype, resnet: nn.Module, images: torch.Tensor) -> None:
    with pytest.raises(TypeError, match=rf"images are {dtype}.*model is torch.float32.*autocast"):
        _make(method, resnet)(images.to(dtype))


def test_half_images_are_fine_inside_autocast(resnet: nn.Module, images: torch.Tensor) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = fastcam.GradCAM(resnet, "layer4")(images.bfloat16())
    assert maps.dtype == torch.float32 and torch.isfinite(maps).all()


def test_softcam_image_dtype_must_match(resnet: nn.Module, images: torch.Tensor) -> None:
    net = softcam.convert(resnet, 3).eval()
    with pytest.raises(TypeError, match="model is torch.float32"):
        fastcam.SoftCAM(net)(images.double())


# ------------------------------------------------------------------------------------------- training mode
@pytest.mark.parametrize("method", METHODS)
def test_training_mode_is_refused_unless_asked_for(method, images: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=5).train()
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"training mode.*model\.eval\(\).*allow_train_mode=True"):
        _make(method, model)(images)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())  # BatchNorm stats untouched
    maps = _make(method, model, allow_train_mode=True)(images)
    assert torch.isfinite(maps).all() and model.training


def test_training_mode_of_a_model_without_mode_dependent_modules_is_fine(images: torch.Tensor) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    assert model.training  # a fresh nn.Module: the flag changes nothing here
    assert torch.isfinite(fastcam.GradCAM(model, "0")(images)).all()


def test_softcam_refuses_training_mode(resnet: nn.Module, images: torch.Tensor) -> None:
    net = softcam.convert(resnet, 3).train()
    with pytest.raises(ValueError, match="training mode"):
        fastcam.SoftCAM(net)(images)
    assert fastcam.SoftCAM(net, allow_train_mode=True)(images).shape == (4, 64, 48)


def test_batch_statistics_no_longer_leak_between_images(images: torch.Tensor) -> None:
    """Explained in eval mode (the default now), one image's map does not depend on its batch."""
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=5).eval()
    cam = fastcam.GradCAM(model, "layer4")
    alone = cam(images[:1], 0)
    together = cam(images, 0)[:1]
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------- targets
@pytest.mark.parametrize("bad", [torch.tensor(1.0), torch.tensor(True), torch.tensor([True, False, True, False])])
def test_float_and_bool_targets_are_refused(bad: torch.Tensor, resnet: nn.Module, images: torch.Tensor) -> None:
    with pytest.raises(TypeError, match="integer class indices"):
        fastcam.GradCAM(resnet, "layer4")(images, bad)


@pytest.mark.parametrize("method", METHODS)
def test_inference_mode_targets_are_accepted(method, resnet: nn.Module, images: torch.Tensor) -> None:
    cam = _make(method, resnet)
    expected = cam(images, [0, 1, 2, 3])
    with torch.inference_mode():
        targets = torch.tensor([0, 1, 2, 3])
        zero_d = torch.tensor(2)
    torch.testing.assert_close(cam(images, targets), expected)
    torch.testing.assert_close(cam(images, zero_d), cam(images, 2))


# ------------------------------------------------------------------------------------------- Grad-CAM++ overflow
def _gradcampp_float64(activations: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    a, g = activations.double().numpy(), grad.double().numpy()
    total = a.sum(axis=(2, 3), keepdims=True)
    denom = 2 * g**2 + total * g**3
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(denom != 0, g**2 / denom, 0.0)
    return torch.from_numpy((alpha * np.maximum(g, 0)).sum(axis=(2, 3)))


@pytest.mark.parametrize("scale", [1.0, 1e-20, 1e13, 1e19, 1e30])
def test_gradcampp_weights_finite_wherever_float64_is(scale: float) -> None:
    g = torch.Generator().manual_seed(3)
    activations = torch.rand(2, 5, 3, 4, generator=g)
    grad = torch.randn(2, 5, 3, 4, generator=g) * scale
    expected = _gradcampp_float64(activations, grad)
    got = gradcampp_weights(activations, grad)
    assert torch.isfinite(expected).all() and torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-30)


def test_gradcampp_map_finite_with_huge_gradients(images: torch.Tensor) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        model[4].weight.mul_(1e19)  # gradients at the conv output reach ~1e18-1e19: g³ overflows float32
    maps = fastcam.GradCAMPlusPlus(model, "0")(images, 1)
    assert torch.isfinite(maps).all() and maps.amax() > 0


# ------------------------------------------------------------------------------------------- non-finite values
class _Features(nn.Module):
    """The target layer: a convolution whose output is NaN at one value of image 2 if asked."""

    def __init__(self, poison: bool) -> None:
        super().__init__()
        self.poison = poison
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        if self.poison:
            a = a.clone()
            a[2, 0, 0, 0] = float("nan")
        return a


class _Poisoned(nn.Module):
    """A model that puts NaN into image 2's logits, target-layer output or gradient."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        self.features = _Features(where == "activations")
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)
        a = _PoisonGradient.apply(a) if self.where == "gradients" else a
        logits = self.fc(a.relu().mean((2, 3)))
        if self.where == "logits":
            logits = logits.clone()
            logits[2, 1] = float("inf")
        return logits


class _PoisonGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: ANN001, ANN205
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        grad = grad.clone()
        grad[2] = float("nan")
        return grad


@pytest.mark.parametrize("method,where,reason", [
    (method, where, where) for method in METHODS for where in ("logits", "activations", "gradients")
    if not (not method.uses_gradients and where == "gradients")  # gradient-free methods compute none
])
def test_non_finite_values_from_the_model_name_the_images(method, where: str, reason: str, images: torch.Tensor) -> None:
    cam = _make(method, _Poisoned(where).eval(), "features")
    with pytest.raises(fastcam.NonFiniteError, match=rf"{reason}.*NaN or Inf for image\(s\) 2 of the batch") as info:
        cam(images, 0)
    assert info.value.indices == [2]


def test_nan_pixels_name_the_images(resnet: nn.Module, images: torch.Tensor) -> None:
    bad = images.clone()
    bad[3, 1, 2, 2] = float("nan")
    with pytest.raises(fastcam.NonFiniteError, match="pixels") as info:
        fastcam.GradCAM(resnet, "layer4")(bad)
    assert info.value.indices == [3]


# ------------------------------------------------------------------------------------------- input channels
class _HeadFirst(nn.Module):
    """A valid model whose 1x1 head conv (64 input channels) is registered before its backbone."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(8, 2, 1)
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).mean((2, 3))


def test_channel_check_reads_the_first_convolution_run(images: torch.Tensor) -> None:
    model = _HeadFirst().eval()
    maps = fastcam.GradCAM(model, "backbone")(images)  # the first landing refused this valid model
    assert maps.shape == (4, 64, 48)
    with pytest.raises(ValueError, match=r"first convolution 'backbone.0' expects 3 input channels but got 1"):
        fastcam.GradCAM(model, "backbone")(images[:, :1])


class _NaNAfterFirstForward(nn.Module):
    """A model that is finite on the images but NaN on every later forward (the masked or ablated inputs of
    Score-CAM's family and Ablation-CAM), as one NaN weight in ResNet's layer4[0].conv1 made oneDNN do
    for batches of another size (issue 26 item 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        logits = self.fc(self.features(x).relu().mean((2, 3)))
        return logits if self.forwards == 1 else logits * float("nan")


@pytest.mark.parametrize("method", [fastcam.ScoreCAM, fastcam.SSCAM, fastcam.ISCAM, fastcam.AblationCAM])
def test_non_finite_extra_forwards_raise_instead_of_nan_maps(method, images: torch.Tensor) -> None:
    kwargs = {"partial_forward": False} if method is fastcam.AblationCAM else {"num_samples": 2} if method is not fastcam.ScoreCAM else {}
    cam = method(_NaNAfterFirstForward().eval(), "features", **kwargs)
    with pytest.raises(fastcam.NonFiniteError, match=r"the channel weights at layer 'features'.*image\(s\) 0, 1, 2, 3") as info:
        cam(images, 0)
    assert info.value.indices == [0, 1, 2, 3]


@pytest.mark.parametrize("name", registry.method_names(post_hoc=True))
def test_targets_on_the_meta_device_are_named(name: str, resnet: nn.Module, images: torch.Tensor) -> None:
    """Issue 26 item 8: targets on the meta device gave torch's raw NotImplementedError in every method."""
    cam = registry.method_class(name)(resnet, "layer4")
    for targets in (torch.tensor([0, 1, 2, 3], device="meta"), torch.tensor(1, device="meta")):
        with pytest.raises(ValueError, match="targets are on the meta device"):
            cam(images, targets)


def test_meta_tensors_in_targets_and_classes_are_named(resnet: nn.Module, images: torch.Tensor) -> None:
    net = softcam.convert(resnet, 3).eval()
    with pytest.raises(ValueError, match="targets are on the meta device"):
        fastcam.SoftCAM(net)(images, torch.tensor([0, 1, 2, 3], device="meta"))
    with pytest.raises(ValueError, match="classes are on the meta device"):
        fastcam.GradCAM(resnet, "layer4").explain_per_class(images, torch.tensor([0, 1], device="meta"))
    meta = torch.zeros(4, 3, device="meta")
    for make, what in ((lambda: fastcam.targets.ClassTarget(meta[:, 0].long()), "classes"),
                       (lambda: fastcam.targets.SegmentationTarget(0, meta), "mask"),
                       (lambda: fastcam.targets.SimilarityTarget(meta), "reference")):
        with pytest.raises(ValueError, match=f"{what}.*meta device"):
            make()


# ------------------------------------------------------------------------------------------- 1×1 maps
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", ["gradcam", "eigencam", "scorecam", "ablationcam"])
def test_single_cell_maps_are_warned_naming_a_layer_with_a_map(name: str, resnet: nn.Module) -> None:
    """Issue 24 item 8: at 32 x 32 px, tiny ResNet's layer4 is 1 x 1: most methods returned all-ones maps and
    the Eigen methods all zeros, without a word."""
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cam = registry.method_class(name)(resnet, "layer4")
    with pytest.warns(fastcam.UninformativeMapWarning, match=r"layer 'layer4' gives 1×1 maps.*explain 'layer3' instead"):
        maps = cam(images, 0)
    assert torch.allclose(maps.amax((1, 2)), maps.amin((1, 2)))  # what the warning is about: constant maps
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cam(images, 0)  # once per explainer, layer and image size
        registry.method_class(name)(resnet, "layer3")(images, 0)  # 2 x 2: no warning

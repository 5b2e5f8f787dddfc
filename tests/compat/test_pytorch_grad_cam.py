"""`fastcam.compat.pytorch_grad_cam` against pytorch-grad-cam 1.5.7 itself, run on the same models, layers,
targets and flags: the maps agree to 1e-5.

pytorch-grad-cam is imported by `fastcam_testkit.pgc.import_pytorch_grad_cam`, with a TEST-ONLY
stand-in for torchvision (which does not import with our CPU torch) holding the few names it touches at
import time; none of them is on the path of a CAM. Two differences are matched before comparing, as
docs/migrate.md says: pytorch-grad-cam's Grad-CAM++ adds 1e-6 to its α denominator (made negligible by a
classifier head scaled x1000, so gradients are far above 1e-3), and its principal components keep the
SVD's arbitrary sign (its `get_2d_projection` is wrapped to return fastcam's sign: the component along
the mean activation).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from fastcam.compat import pytorch_grad_cam as compat
from fastcam.compat.pytorch_grad_cam.utils import model_targets as compat_targets
from fastcam.models import tiny_resnet, tiny_vgg
from fastcam.targets import BinaryTarget, ClassTarget, SegmentationTarget, SimilarityTarget
from fastcam_testkit.pgc import give_fastcam_sign, pytorch_grad_cam_or_skip

pgc = pytorch_grad_cam_or_skip()
import pytorch_grad_cam.utils.model_targets as pgc_targets  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

GRADIENT = ["GradCAM", "GradCAMPlusPlus", "XGradCAM", "LayerCAM", "HiResCAM", "GradCAMElementWise"]
METHODS = GRADIENT + ["EigenCAM", "EigenGradCAM", "ScoreCAM", "AblationCAM"]


@pytest.fixture
def fastcam_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    give_fastcam_sign(monkeypatch)


def both(name: str, model: nn.Module, layers: list[nn.Module], images: torch.Tensor, make_targets, **call) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """(pytorch-grad-cam's maps, the compat module's maps) of the same call; `make_targets(module)` builds
    the targets from that library's model_targets module (None: predicted classes)."""
    theirs_cam = getattr(pgc, name)(model=model, target_layers=layers)
    try:
        theirs = theirs_cam(input_tensor=images, targets=make_targets(pgc_targets), **call)
    finally:
        theirs_cam.activations_and_grads.release()
    with getattr(compat, name)(model=model, target_layers=layers) as cam:
        ours = cam(input_tensor=images, targets=make_targets(compat_targets), **call)
    return theirs, ours


def comparable_rows(name: str, model: nn.Module, images: torch.Tensor, categories: list[int] | None) -> np.ndarray:
    """The images whose maps both libraries define alike: every image, except that for Ablation-CAM only those
    whose target score is positive. fastcam divides the score's drop by |y|; pytorch-grad-cam divides by y,
    which flips every weight of an image whose score is negative (docs/migrate.md)."""
    if name != "AblationCAM":
        return np.ones(len(images), dtype=bool)
    with torch.no_grad():
        logits = model(images)
    rows = torch.arange(len(images))
    chosen = logits.argmax(1) if categories is None else torch.tensor(categories)
    keep = (logits[rows, chosen] > 0).numpy()
    assert keep.any(), "no image with a positive score: the comparison would test nothing"
    return keep


def classes(*categories: int):  # noqa: ANN201
    return lambda module: [module.ClassifierOutputTarget(c) for c in categories]


@pytest.fixture
def resnet_x1000() -> nn.Module:
    """A tiny ResNet whose head is scaled x1000: gradients far above Grad-CAM++'s 1e-6 (see the docstring)."""
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=5).eval()
    with torch.no_grad():
        model.fc.weight.mul_(1000)
    return model


@pytest.fixture
def small_images() -> torch.Tensor:
    return torch.randn(3, 3, 40, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("flags", [{}, {"aug_smooth": True}, {"eigen_smooth": True}], ids=["plain", "aug", "eigen"])
@pytest.mark.parametrize("layers", ["layer3", "layer2+layer3"])
@pytest.mark.parametrize("name", METHODS)
def test_resnet_maps_equal_pytorch_grad_cams(name, layers, flags, resnet_x1000, small_images, fastcam_sign):
    model = resnet_x1000
    modules = [getattr(model, n) for n in layers.split("+")]
    theirs, ours = both(name, model, modules, small_images, classes(1, 0, 4), **flags)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape == (3, 40, 32)
    keep = comparable_rows(name, model, small_images, [1, 0, 4])
    np.testing.assert_allclose(ours[keep], theirs[keep], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["GradCAM", "XGradCAM", "ScoreCAM", "AblationCAM", "EigenCAM"])
def test_vgg_maps_equal_pytorch_grad_cams(name, small_images, fastcam_sign):
    torch.manual_seed(0)
    model = tiny_vgg(num_classes=5).eval()
    theirs, ours = both(name, model, [model.features[-1]], small_images, lambda module: None)  # predicted classes
    keep = comparable_rows(name, model, small_images, None)
    np.testing.assert_allclose(ours[keep], theirs[keep], atol=1e-5, rtol=0)


class Logits(nn.Module):
    """pytorch-grad-cam's Hugging Face wrapper (its tutorial): the model's logits as a tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def vit_reshape(tensor: torch.Tensor, height: int = 4, width: int = 4) -> torch.Tensor:
    """pytorch-grad-cam's documented ViT reshape_transform (its vision transformers tutorial)."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


@pytest.mark.parametrize("name", ["GradCAM", "GradCAMPlusPlus", "LayerCAM", "ScoreCAM"])
def test_hugging_face_vit_with_reshape_transform(name):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=32, num_labels=5)
    model = Logits(transformers.ViTForImageClassification(config)).eval()
    with torch.no_grad():
        model.model.classifier.weight.mul_(1e5)  # Grad-CAM++'s 1e-6 negligible (see the docstring)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    layer = model.model.vit.layers[-1].layernorm_before
    theirs_cam = getattr(pgc, name)(model=model, target_layers=[layer], reshape_transform=vit_reshape)
    theirs = theirs_cam(input_tensor=images, targets=classes(3, 1)(pgc_targets))
    theirs_cam.activations_and_grads.release()
    ours = getattr(compat, name)(model=model, target_layers=[layer], reshape_transform=vit_reshape)(
        input_tensor=images, targets=classes(3, 1)(compat_targets))
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


class TinySegmenter(nn.Module):
    """A fully convolutional (B, 3, H, W) -> (B, 4, H, W) segmentation model."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(self.head(self.encoder(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)


@pytest.mark.parametrize("name", ["GradCAM", "HiResCAM", "ScoreCAM", "AblationCAM"])
def test_segmentation_target(name):
    torch.manual_seed(0)
    model = TinySegmenter().eval()
    with torch.no_grad():  # class 2's scores positive, so Ablation-CAM's |y| and y conventions agree
        model.head.bias[2] += 1.0
    images = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        mask = (model(images[:1]).argmax(1)[0] == 2).numpy().astype(np.float32)

    def targets(module):  # noqa: ANN001, ANN202
        return [module.SemanticSegmentationTarget(2, mask) for _ in range(2)]

    theirs, ours = both(name, model, [model.encoder], images, targets)
    keep = np.ones(len(images), dtype=bool)
    if name == "AblationCAM":  # the |y| convention: compare images whose score is positive (comparable_rows)
        with torch.no_grad():
            keep = ((model(images)[:, 2] * torch.from_numpy(mask)).sum((1, 2)) > 0).numpy()
        assert keep.any(), "no image with a positive score: the comparison would test nothing"
    np.testing.assert_allclose(ours[keep], theirs[keep], atol=1e-5, rtol=0)


def test_targets_of_one_kind_become_one_batched_fastcam_target():
    cats = [compat_targets.ClassifierOutputTarget(c) for c in (2, 0)]
    target = compat_targets.to_fastcam_target(cats, 2)
    assert isinstance(target, ClassTarget) and target.classes.tolist() == [2, 0]
    assert isinstance(compat_targets.to_fastcam_target([compat_targets.BinaryClassifierOutputTarget(0)] * 2, 2), BinaryTarget)
    masks = [np.ones((4, 4), np.float32), np.zeros((4, 4), np.float32)]
    seg = compat_targets.to_fastcam_target([compat_targets.SemanticSegmentationTarget(1, m) for m in masks], 2)
    assert isinstance(seg, SegmentationTarget) and seg.mask.shape == (2, 4, 4)
    sim = compat_targets.to_fastcam_target([compat_targets.SimilarityToConceptTarget(torch.ones(3))] * 2, 2)
    assert isinstance(sim, SimilarityTarget) and sim.reference.shape == (2, 3)
    with pytest.raises(ValueError, match="one target per image"):
        compat_targets.to_fastcam_target(cats, 3)


@pytest.mark.parametrize("kind", ["ClassifierOutputSoftmaxTarget", "ClassifierOutputReST"])
def test_class_score_targets_match(kind, resnet_x1000, small_images):
    theirs, ours = both("GradCAM", resnet_x1000, [resnet_x1000.layer3], small_images,
                        lambda module: [getattr(module, kind)(c) for c in (1, 3, 0)])
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_binary_and_similarity_targets_match(small_images):
    torch.manual_seed(0)
    binary = tiny_resnet(num_classes=1).eval()
    theirs, ours = both("GradCAM", binary, [binary.layer3], small_images,
                        lambda module: [module.BinaryClassifierOutputTarget(0)] * 3)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    embedder = tiny_resnet(num_classes=6).eval()
    concept = torch.randn(6, generator=torch.Generator().manual_seed(4))
    # pytorch-grad-cam 1.5.7 does not ship SimilarityToConceptTarget (its tutorial defines it): both run ours
    theirs, ours = both("GradCAM", embedder, [embedder.layer3], small_images,
                        lambda module: [compat_targets.SimilarityToConceptTarget(concept)] * 3)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_other_callables_run_per_image_with_one_warning(resnet_x1000, small_images):
    mixed = lambda module: [module.ClassifierOutputTarget(1), module.ClassifierOutputSoftmaxTarget(0),  # noqa: E731
                            lambda row: row[4] - row[0]]
    with pytest.warns(RuntimeWarning, match="called on its image's output in turn"):
        theirs, ours = both("ScoreCAM", resnet_x1000, [resnet_x1000.layer3], small_images, mixed)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="one score per image"), pytest.warns(RuntimeWarning):
        compat.GradCAM(resnet_x1000, [resnet_x1000.layer3])(small_images, [compat_targets.RawScoresOutputTarget()] * 3)


@pytest.mark.parametrize("name", ["FullGrad", "GuidedBackpropReLUModel", "DeepFeatureFactorization", "KPCA_CAM",
                                  "FinerCAM", "ShapleyCAM"])
def test_what_fastcam_does_not_implement_names_an_alternative(name, resnet):
    with pytest.raises(NotImplementedError, match=f"{name} is not implemented in fastcam; .*fastcam|captum"):
        getattr(compat, name)(resnet, [resnet.layer4])


def test_no_hook_is_left_and_the_model_is_put_in_eval_mode(small_images):
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=5).train()
    cam = compat.GradCAM(model=model, target_layers=[model.layer4])
    assert not model.training
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cam(small_images)  # predicted classes: no warning
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    with pytest.raises(TypeError, match="list of modules"):
        compat.GradCAM(model, model.layer4)


def test_tta_transforms_set_on_the_object_as_pytorch_grad_cams_users_do(resnet_x1000, small_images):
    ttach = pytest.importorskip("ttach")
    transforms = ttach.Compose([ttach.VerticalFlip(), ttach.Multiply(factors=[0.8, 1.2])])
    maps = []
    for library in (pgc, compat):
        cam = library.LayerCAM(model=resnet_x1000, target_layers=[resnet_x1000.layer3])
        cam.tta_transforms = transforms
        maps.append(cam(input_tensor=small_images, targets=None, aug_smooth=True))
        if library is pgc:
            cam.activations_and_grads.release()
    np.testing.assert_allclose(maps[1], maps[0], atol=1e-5, rtol=0)

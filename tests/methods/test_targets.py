"""Any target, end to end: segmentation, embedding similarity, single-logit binary, multi-label (summed, or
one map per class) and plain functions, against float64 hand computations (Grad-CAM, Score-CAM), and the
faithfulness metrics on the same target definitions.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastcam
from fastcam.methods.registry import method_names
from fastcam.models import tiny_resnet
from fastcam.targets import BinaryTarget, MultiLabelTarget, SegmentationTarget, SimilarityTarget
from fastcam_testkit.byom import assert_maps_close, hand_gradcam
from fastcam_testkit.common import gen
from fastcam_testkit.methods import BATCH_DEPENDENT
from fastcam_testkit.methods import make_method as _make

POST_HOC = method_names(post_hoc=True)


def hand_scorecam(model: nn.Module, layer: nn.Module, images: torch.Tensor,
                  probability: Callable[[Any, torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Score-CAM one image and one channel at a time: -> (weights (B, C), lowres (B, h, w)).

    probability(output, index) scores the images `index` of the batch."""
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    with torch.no_grad():
        base = probability(model(images), torch.arange(images.shape[0]))
    handle.remove()
    acts = seen[0]
    batch, channels = acts.shape[:2]
    scores = torch.empty(batch, channels, dtype=images.dtype)
    with torch.no_grad():
        for b in range(batch):
            for c in range(channels):
                a = acts[b, c]
                span = a.max() - a.min()
                mask = (a - a.min()) / span if span > 0 else torch.zeros_like(a)
                up = F.interpolate(mask[None, None], size=images.shape[2:], mode="bilinear", align_corners=False)[0]
                scores[b, c] = probability(model(images[b : b + 1] * up), torch.tensor([b]))[0]
    weights = torch.softmax(scores - base[:, None], dim=1)
    return weights, torch.relu((weights[:, :, None, None] * acts).sum(1))


# ---------------------------------------------------------------------------------------------- binary


class SingleLogitNet(nn.Module):
    def __init__(self, flat: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1), nn.ReLU(), nn.Conv2d(6, 6, 3, 2, 1))
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 1))
        self.flat = flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(self.features(x))
        return z[:, 0] if self.flat else z


@pytest.fixture(scope="module")
def binary() -> tuple[SingleLogitNet, torch.Tensor]:
    torch.manual_seed(0)
    model = SingleLogitNet().eval().double()
    with torch.no_grad():
        model.head[-1].weight.mul_(20)  # a head that separates: probabilities away from 1/2
    return model, torch.randn(2, 3, 16, 16, generator=gen(0), dtype=torch.float64)


def test_single_logit_scorecam_weights_are_not_uniform_and_match_hand(binary: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = binary
    sigmoid = lambda out, index: torch.sigmoid(out[:, 0])  # noqa: E731
    weights, lowres = hand_scorecam(model, model.features, x, sigmoid)
    uniform = torch.full_like(weights, 1 / weights.shape[1])
    assert not torch.allclose(weights, uniform, rtol=1e-2, atol=0)  # the sigmoid, not a softmax over one class
    got = fastcam.ScoreCAM(model, "features").explain(x)  # default target: the single class (index 0)
    assert got.targets.tolist() == [0, 0]
    torch.testing.assert_close(got.lowres.double(), lowres, rtol=1e-5, atol=1e-6 * float(lowres.max()))
    negative = fastcam.ScoreCAM(model, "features").explain(x, BinaryTarget(positive=False))
    _, lowres_neg = hand_scorecam(model, model.features, x, lambda out, index: torch.sigmoid(-out[:, 0]))
    torch.testing.assert_close(negative.lowres.double(), lowres_neg, rtol=1e-5, atol=1e-6 * float(lowres_neg.max()))


def test_single_logit_gradcam_positive_and_negative_evidence(binary: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = binary
    for target, sign in ((None, 1.0), (BinaryTarget(), 1.0), (BinaryTarget(positive=False), -1.0)):
        lowres, maps = hand_gradcam(model, model.features, x, lambda out: sign * out[:, 0], lambda t: t)
        if sign < 0 and not (lowres.flatten(1).amax(1) > 0).all():
            continue  # an image with no negative evidence at all: nothing to compare
        exp = fastcam.GradCAM(model, "features").explain(x, target)
        assert_maps_close(exp.lowres, exp.maps, lowres, maps)


def test_single_logit_deletion_curve_is_not_flat(binary: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = binary
    model = model.float()
    try:
        x = x.float()
        maps = fastcam.GradCAM(model, "features")(x)
        positive = fastcam.metrics.deletion(model, x, maps, steps=8)
        z = model(x)[:, 0].detach()
        torch.testing.assert_close(positive.curve[:, 0], torch.sigmoid(z))
        assert (positive.curve.std(dim=1) > 1e-3).all() and (positive.curve < 1).all()
        negative = fastcam.metrics.deletion(model, x, maps, BinaryTarget(positive=False), steps=8)
        torch.testing.assert_close(negative.curve, 1 - positive.curve, rtol=1e-5, atol=1e-6)
        assert negative.targets.tolist() == [-1, -1]
        drop = fastcam.metrics.average_drop_increase(model, x, maps, BinaryTarget())
        assert torch.isfinite(drop.drop).all()
    finally:
        model.double()


def test_a_one_dimensional_logit_needs_binary_target() -> None:
    torch.manual_seed(1)
    model = SingleLogitNet(flat=True).eval()
    x = torch.randn(2, 3, 16, 16, generator=gen(1))
    with pytest.raises(ValueError, match=r"BinaryTarget for a \(B,\) single logit"):
        fastcam.GradCAM(model, "features")(x)
    for name in POST_HOC:
        maps = _make(name, model, "features")(x, BinaryTarget())
        assert maps.shape == (2, 16, 16) and torch.isfinite(maps).all()


# ---------------------------------------------------------------------------------------------- segmentation


class TinySegNet(nn.Module):
    """torchvision's segmentation convention: an OrderedDict with "out" (B, K, H, W) and "aux"."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU())
        self.classifier = nn.Conv2d(8, classes, 1)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        logits = F.interpolate(self.classifier(self.backbone(x)), size=x.shape[2:], mode="bilinear", align_corners=False)
        return OrderedDict(out=logits, aux=logits.detach())


@pytest.fixture(scope="module")
def segnet() -> TinySegNet:
    torch.manual_seed(2)
    return TinySegNet().eval().double()


def test_segmentation_target_matches_hand_gradcam(segnet: TinySegNet) -> None:
    x = torch.randn(2, 3, 24, 20, generator=gen(2), dtype=torch.float64)
    with torch.no_grad():
        mask = (segnet(x)["out"].argmax(1) == 1).double()  # per image: where class 1 is predicted
    assert mask.sum() > 0
    target = SegmentationTarget(1, mask)
    lowres, maps = hand_gradcam(segnet, segnet.backbone, x, lambda out: (out["out"][:, 1] * mask).sum((1, 2)), lambda t: t)
    exp = fastcam.GradCAM(segnet, "backbone").explain(x, target)
    assert_maps_close(exp.lowres, exp.maps, lowres, maps)
    assert exp.targets.tolist() == [-1, -1] and exp.logits.shape == (2, 1)  # the target scores
    for name in POST_HOC:
        got = _make(name, segnet, "backbone")(x, target)
        assert got.shape == (2, 24, 20) and torch.isfinite(got).all() and (got.flatten(1).amax(1) == 1).all()
    with pytest.raises(ValueError, match=r"SegmentationTarget for \(B, K, H, W\) segmentation maps"):
        fastcam.GradCAM(segnet, "backbone")(x, 1)


def test_segmentation_scorecam_uses_each_images_mask(segnet: TinySegNet) -> None:
    x = torch.randn(2, 3, 12, 12, generator=gen(3), dtype=torch.float64)
    mask = torch.zeros(2, 12, 12, dtype=torch.float64)
    mask[0, :6], mask[1, 6:] = 1, 1

    def probability(out: Any, index: torch.Tensor) -> torch.Tensor:
        m = mask[index]
        return (torch.softmax(out["out"], 1)[:, 2] * m).sum((1, 2)) / m.sum((1, 2))

    _, lowres = hand_scorecam(segnet, segnet.backbone, x, probability)
    got = fastcam.ScoreCAM(segnet, "backbone", batch_size=5).explain(x, SegmentationTarget(2, mask))
    torch.testing.assert_close(got.lowres.double(), lowres, rtol=1e-5, atol=1e-6 * float(lowres.max()))


# ---------------------------------------------------------------------------------------------- embeddings


def test_similarity_target_matches_hand_gradcam_and_runs_every_method(one_thread: None) -> None:
    torch.manual_seed(3)
    model = tiny_resnet(num_classes=16).eval().double()  # a 16-d embedding head
    x = torch.randn(2, 3, 32, 32, generator=gen(4), dtype=torch.float64)
    with torch.no_grad():
        reference = model(torch.randn(1, 3, 32, 32, generator=gen(5), dtype=torch.float64))[0]
    lowres, maps = hand_gradcam(model, model.layer3, x, lambda out: F.cosine_similarity(out, reference[None]), lambda t: t)
    exp = fastcam.GradCAM(model, "layer3").explain(x, SimilarityTarget(reference))
    assert_maps_close(exp.lowres, exp.maps, lowres, maps)
    model.float()
    for name in POST_HOC:
        got = _make(name, model, "layer3")(x.float(), SimilarityTarget(reference.float()))
        assert got.shape == (2, 32, 32) and torch.isfinite(got).all()


# ---------------------------------------------------------------------------------------------- multi-label


@pytest.fixture(scope="module")
def multilabel() -> nn.Module:
    torch.manual_seed(4)
    return tiny_resnet(num_classes=5).eval()


def test_multilabel_summed_matches_hand_gradcam(multilabel: nn.Module, one_thread: None) -> None:
    model = multilabel.double()
    try:
        x = torch.randn(2, 3, 32, 32, generator=gen(6), dtype=torch.float64)
        lowres, maps = hand_gradcam(model, model.layer3, x, lambda out: out[:, 1] + out[:, 3], lambda t: t)
        exp = fastcam.GradCAM(model, "layer3").explain(x, MultiLabelTarget([1, 3]))
        assert_maps_close(exp.lowres, exp.maps, lowres, maps)
        function = fastcam.GradCAM(model, "layer3").explain(x, lambda out: out[:, 1] + out[:, 3])  # a plain callable
        torch.testing.assert_close(function.maps, exp.maps)
    finally:
        model.float()


# methods whose noise depends on the batch's composition differ from separate calls by design
@pytest.mark.parametrize("name", [n for n in POST_HOC if n not in BATCH_DEPENDENT])
def test_one_map_per_class_in_one_call_equals_separate_calls(multilabel: nn.Module, name: str, one_thread: None) -> None:
    x = torch.randn(2, 3, 32, 32, generator=gen(7))
    cam = _make(name, multilabel, "layer3")
    per_class = cam.explain_per_class(x, [1, 3, 4])
    assert per_class.maps.shape == (2, 3, 32, 32) and per_class.targets.tolist() == [[1, 3, 4], [1, 3, 4]]
    assert per_class.lowres.shape[:2] == (2, 3) and per_class.logits.shape == (2, 5)
    for j, k in enumerate([1, 3, 4]):
        torch.testing.assert_close(per_class.maps[:, j], cam(x, k), rtol=1e-4, atol=1e-5)
    own = cam.explain_per_class(x, torch.tensor([[0, 2], [4, 1]]))  # classes per image
    torch.testing.assert_close(own.maps[1, 0], cam(x[1:], 4)[0], rtol=1e-4, atol=1e-5)


def test_per_class_refuses_bad_classes(multilabel: nn.Module) -> None:
    cam = fastcam.GradCAM(multilabel, "layer3")
    x = torch.randn(2, 3, 32, 32, generator=gen(8))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 4\]"):
        cam.explain_per_class(x, [1, 9])
    with pytest.raises(ValueError, match="3 rows for a batch of 2"):
        cam.explain_per_class(x, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="class indices"):
        cam.explain_per_class(x, torch.tensor([0.5]))

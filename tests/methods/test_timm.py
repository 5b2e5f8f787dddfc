"""timm models as users bring them (random weights, nothing downloaded), where timm imports.

timm needs torchvision, which has no build for our CPU torch: this module skips on CI and runs where both
import (the GPU machine). It checks what the Hugging Face tests cannot: timm's own layouts. Swin stages
are channels-last (B, h, w, C) (refused without a transform, right with `fastcam.reshape.swin()`), ViTs
carry register or distillation tokens, ConvNeXt/ResNet/EfficientNet stages are channels-first.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch import nn

import fastcam
from fastcam.methods.registry import method_names
from fastcam_testkit.byom import assert_maps_close, class_score, hand_gradcam, import_or_skip
from fastcam_testkit.common import gen
from fastcam_testkit.methods import make_method

timm = import_or_skip("timm")

POST_HOC = method_names(post_hoc=True)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _tokens(prefix: int, grid: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: t[:, prefix:].reshape(t.shape[0], *grid, t.shape[-1]).permute(0, 3, 1, 2)


def _cases() -> dict[str, tuple[Callable[[], nn.Module], str, tuple[int, int], Any, Any]]:
    """name -> (builder, layer, image size, hand layout, the fastcam.reshape transform)."""
    from timm.models.convnext import ConvNeXt
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer

    same = lambda t: t  # noqa: E731
    vit = dict(patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=3)
    return {
        "resnet18": (lambda: timm.create_model("resnet18", pretrained=False, num_classes=3), "layer4", (64, 64), same, None),
        "efficientnet_b0": (lambda: timm.create_model("efficientnet_b0", pretrained=False, num_classes=3), "blocks.-1",
                            (64, 64), same, None),
        "convnext": (lambda: ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 8, 16, 16), num_classes=3), "stages.2", (64, 64),
                     same, None),
        "vit-registers": (lambda: VisionTransformer(img_size=(32, 48), reg_tokens=4, **vit), "blocks.-1.norm1", (32, 48),
                          _tokens(5, (4, 6)), fastcam.reshape.vit(5, grid=(4, 6))),
        "deit-distilled": (lambda: VisionTransformerDistilled(img_size=32, **vit), "blocks.-1.norm1", (32, 32),
                           _tokens(2, (4, 4)), fastcam.reshape.vit(2)),
        "swin": (lambda: SwinTransformer(img_size=32, patch_size=4, embed_dim=8, depths=(1, 1), num_heads=(1, 2),
                                         window_size=4, num_classes=3), "layers.-1", (32, 32),
                 lambda t: t.permute(0, 3, 1, 2), fastcam.reshape.swin()),
    }


CASES = _cases()


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest) -> tuple[nn.Module, str, tuple[int, int], Any, Any]:
    build, layer, size, to_maps, transform = CASES[request.param]
    torch.manual_seed(0)
    return build().eval().to(DEVICE), layer, size, to_maps, transform


def test_gradcam_matches_hand_computation(case: tuple[nn.Module, str, tuple[int, int], Any, Any]) -> None:
    model, layer, size, to_maps, transform = case
    model = model.double()
    try:
        x = torch.randn(2, 3, *size, generator=gen(0), dtype=torch.float64).to(DEVICE)
        classes = torch.tensor([0, 2], device=DEVICE)
        cam = fastcam.GradCAM(model, layer, reshape_transform=transform)
        lowres, maps = hand_gradcam(model, cam.layer, x, class_score(classes), to_maps)
        exp = cam.explain(x, classes)
        assert_maps_close(exp.lowres.cpu(), exp.maps.cpu(), lowres.cpu(), maps.cpu())
    finally:
        model.float()


@pytest.mark.parametrize("name", POST_HOC)
def test_every_method_runs(case: tuple[nn.Module, str, tuple[int, int], Any, Any], name: str) -> None:
    model, layer, size, _, transform = case
    x = torch.randn(2, 3, *size, generator=gen(1)).to(DEVICE)
    exp = make_method(name, model, layer, reshape_transform=transform).explain(x)
    assert exp.maps.shape == (2, *size) and torch.isfinite(exp.maps).all() and exp.maps.max() <= 1
    assert all(p.grad is None for p in model.parameters())


def test_swin_channels_last_and_vit_tokens_are_refused_without_a_transform() -> None:
    build, layer, size, _, _ = CASES["swin"]
    x = torch.randn(1, 3, *size, generator=gen(2))
    with pytest.raises(ValueError, match="looks channels-last"):
        fastcam.GradCAM(build().eval(), layer)(x)
    build, layer, size, _, _ = CASES["vit-registers"]
    with pytest.raises(ValueError, match="3-D token sequence"):
        fastcam.GradCAM(build().eval(), layer)(torch.randn(1, 3, *size, generator=gen(3)))

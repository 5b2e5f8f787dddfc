"""Layer outputs of every layout users bring: right against a float64 hand computation, or a clear error.

Hugging Face `transformers` models are built from small configs with random weights (nothing downloaded):
ResNet and ConvNeXt (channels-first maps), ViT on a non-square patch grid, DeiT with a distillation token,
DINOv2 with register tokens, Swin (stages return (tokens, reshaped, attentions)). Channels-last outputs
are exercised with toy models (timm's Swin/ConvNeXt layouts: tests/methods/test_timm.py where timm
imports).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import fastcam
from fastcam.methods.registry import method_names
from fastcam_testkit.byom import Case, assert_maps_close, class_score, hand_gradcam, hf_model
from fastcam_testkit.common import gen
from fastcam_testkit.methods import make_method as _make

pytest.importorskip("transformers")

KINDS = ["resnet", "convnext", "vit", "deit", "dinov2_registers", "swin"]
TOKEN_KINDS = ["vit", "deit", "dinov2_registers", "swin"]  # layers that output token sequences
POST_HOC = method_names(post_hoc=True)


@pytest.fixture(scope="module", params=KINDS)
def case(request: pytest.FixtureRequest) -> Case:
    return hf_model(request.param)


def test_gradcam_matches_hand_computation_in_float64(case: Case, one_thread: None) -> None:
    model = case.model.double()
    try:
        x = torch.randn(2, 3, *case.size, generator=gen(0), dtype=torch.float64)
        classes = torch.tensor([0, 2])
        layer = dict(model.named_modules())[case.layer]
        lowres, maps = hand_gradcam(model, layer, x, class_score(classes), case.to_maps)
        exp = fastcam.GradCAM(model, case.layer, reshape_transform=case.transform).explain(x, classes)
        assert_maps_close(exp.lowres, exp.maps, lowres, maps, tol=1e-5)
        assert exp.targets.tolist() == [0, 2] and exp.logits.shape == (2, 3)
    finally:
        model.float()


@pytest.mark.parametrize("name", POST_HOC)
def test_every_method_runs_on_the_model_as_it_is(case: Case, name: str, one_thread: None) -> None:
    """No wrapper: the model's own layer names, its ModelOutput, its tuple-returning blocks."""
    x = torch.randn(2, 3, *case.size, generator=gen(1))
    cam = _make(name, case.model, case.layer, reshape_transform=case.transform)
    assert cam.layer_name == case.layer and cam.model is case.model
    exp = cam.explain(x)
    assert exp.maps.shape == (2, *case.size) and exp.logits.shape == (2, 3)
    assert torch.isfinite(exp.maps).all() and exp.maps.min() >= 0 and exp.maps.max() <= 1
    assert (exp.maps.flatten(1).amax(1) == 1).all()  # not the all-zero map of a layer the target ignores
    assert all(p.grad is None for p in case.model.parameters())


@pytest.mark.parametrize("case", TOKEN_KINDS, indirect=True)
def test_token_layers_are_refused_without_a_transform(case: Case) -> None:
    assert case.transform is not None
    x = torch.randn(1, 3, *case.size, generator=gen(2))
    with pytest.raises(ValueError, match=r"3-D token sequence .*=fastcam\.reshape\.vit\(\) .* fastcam\.reshape\.swin\(\)"):
        fastcam.GradCAM(case.model, case.layer)(x)


def test_vit_grid_must_be_given_when_not_square() -> None:
    case = hf_model("vit")  # 4 x 6 patches
    x = torch.randn(1, 3, *case.size, generator=gen(3))
    with pytest.raises(ValueError, match=r"24 patch tokens do not form a square grid: pass grid=\(h, w\)"):
        fastcam.GradCAM(case.model, case.layer, reshape_transform=fastcam.reshape.vit(1))(x)
    with pytest.raises(ValueError, match="does not hold"):  # a wrong prefix count cannot pass unnoticed either
        fastcam.GradCAM(case.model, case.layer, reshape_transform=fastcam.reshape.vit(2, grid=(4, 6)))(x)


def test_vit_last_block_output_is_refused_with_the_layer_to_use_instead() -> None:
    """After the last block, patch tokens reach the head only through CLS: their gradient is exactly zero,
    so Grad-CAM's map would be all zero. Refused, naming the last block's first norm, which is right."""
    case = hf_model("vit")
    x = torch.randn(2, 3, *case.size, generator=gen(4))
    transform = fastcam.reshape.vit(1, grid=(4, 6))
    for name in ("gradcam", "gradcampp", "cfcam"):
        with pytest.raises(ValueError, match=r"exactly zero for every image.*vit\.layers\.-1\.layernorm_before"):
            _make(name, case.model, "vit.layers.1", reshape_transform=transform)(x)
    cam = fastcam.GradCAM(case.model, "vit.layers.-1.layernorm_before", reshape_transform=transform)
    assert cam.layer_name == "vit.layers.1.layernorm_before"  # a name from the end resolves to the model's own
    assert cam(x).flatten(1).amax(1).tolist() == [1.0, 1.0]


# ---------------------------------------------------------------------------------------- channels-last


class ChannelsLastNet(nn.Module):
    """A ConvNeXt/Swin-like toy whose target layer ("block") outputs channels-last (B, h, w, C) maps
    (or (B, d, h, w, C) volumes)."""

    def __init__(self, channels: int, volumetric: bool = False) -> None:
        super().__init__()
        conv = nn.Conv3d if volumetric else nn.Conv2d
        self.stem = conv(3, 8, 4, stride=4)
        self.block = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, channels), nn.GELU())
        self.head = nn.Linear(channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(self.stem(x).movedim(1, -1))
        return self.head(y.flatten(1, -2).mean(1))


@pytest.mark.parametrize("channels, volumetric", [(96, False), (12, False), (8, False), (40, True)],
                         ids=["swin-like-96", "few-channels-12", "as-many-as-rows-8", "volume-40"])
def test_channels_last_is_refused_without_a_transform_and_right_with_nhwc(channels: int, volumetric: bool) -> None:
    """(B, 8, 8, 8) for 32 x 32 images reads both ways and is taken channels-first (the next test); every
    other channels-last shape is refused."""
    torch.manual_seed(0)
    model = ChannelsLastNet(channels, volumetric).eval().double()
    size = (16, 32, 32) if volumetric else (32, 32)
    x = torch.randn(2, 3, *size, generator=gen(5), dtype=torch.float64)
    if channels != 8:
        with pytest.raises(ValueError, match=r"looks channels-last .* reshape_transform=fastcam\.reshape\.nhwc"):
            fastcam.GradCAM(model, "block")(x)
    classes = torch.tensor([1, 2])
    lowres, maps = hand_gradcam(model, model.block, x, class_score(classes), lambda t: t.movedim(-1, 1))
    exp = fastcam.GradCAM(model, "block", reshape_transform=fastcam.reshape.nhwc).explain(x, classes)
    assert_maps_close(exp.lowres, exp.maps, lowres, maps)


def test_channels_first_maps_that_could_read_either_way_are_taken_as_channels_first(resnet: nn.Module) -> None:
    """(B, 8, 8, 8) for 32 x 32 images fits both readings: channels-first, the convention, is kept."""
    model = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    x = torch.randn(1, 3, 32, 32, generator=gen(6))
    assert fastcam.GradCAM(model, "1").explain(x).lowres.shape == (1, 8, 8)
    # maps of elongated images are not mistaken for channels-last
    x = torch.randn(1, 3, 16, 96, generator=gen(7))
    assert fastcam.GradCAM(model, "1").explain(x).lowres.shape == (1, 4, 24)


def test_bad_transform_outputs_are_refused(resnet: nn.Module, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"reshape_transform must return \(B, C, h, w\)"):
        fastcam.GradCAM(resnet, "layer4", reshape_transform=lambda t: t.flatten(2))(images)
    with pytest.raises(ValueError, match="B = 4"):
        fastcam.GradCAM(resnet, "layer4", reshape_transform=lambda t: t[:1])(images)
    with pytest.raises(TypeError, match="reshape_transform must be callable"):
        fastcam.GradCAM(resnet, "layer4", reshape_transform="vit")
    with pytest.raises(ValueError, match="gives 3-D maps .* for 2-D images"):
        fastcam.GradCAM(resnet, "layer4", reshape_transform=lambda t: t.unsqueeze(2))(images)

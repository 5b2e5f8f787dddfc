"""torchvision's transformers (random weights, nothing downloaded), where torchvision imports: the ViT's
token sequences after the class token, the Swin's channels-last stages. Skips on CI (no torchvision build
for our CPU torch); runs where it imports (the GPU machine). The CNNs are in test_torchvision.py.
"""
from __future__ import annotations

import pytest
import torch

import fastcam
from fastcam.methods.registry import method_names
from fastcam_testkit.byom import assert_maps_close, class_score, hand_gradcam, import_or_skip
from fastcam_testkit.common import gen
from fastcam_testkit.methods import make_method

tv_models = import_or_skip("torchvision.models")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_vit_matches_hand_computation_and_every_method_runs() -> None:
    torch.manual_seed(0)
    model = tv_models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                        mlp_dim=32, num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32, generator=gen(0))
    with pytest.raises(ValueError, match="initialised to zero"):  # torchvision zero-initialises ViT heads
        fastcam.GradCAM(model, "encoder.layers.encoder_layer_1.ln_1", reshape_transform=fastcam.reshape.vit(1))(x)
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    model = model.to(DEVICE).double()
    layer = "encoder.layers.encoder_layer_1.ln_1"
    x = torch.randn(2, 3, 32, 32, generator=gen(0), dtype=torch.float64).to(DEVICE)
    classes = torch.tensor([1, 2], device=DEVICE)
    to_maps = lambda t: t[:, 1:].reshape(2, 4, 4, 16).permute(0, 3, 1, 2)  # noqa: E731
    lowres, maps = hand_gradcam(model, dict(model.named_modules())[layer], x, class_score(classes), to_maps)
    exp = fastcam.GradCAM(model, layer, reshape_transform=fastcam.reshape.vit(1)).explain(x, classes)
    assert_maps_close(exp.lowres.cpu(), exp.maps.cpu(), lowres.cpu(), maps.cpu())
    with pytest.raises(ValueError, match="exactly zero for every image"):  # the last block's output: CLS only
        fastcam.GradCAM(model, "encoder.layers.encoder_layer_1", reshape_transform=fastcam.reshape.vit(1))(x)
    model.float()
    for name in method_names(post_hoc=True):
        got = make_method(name, model, layer, reshape_transform=fastcam.reshape.vit(1))(x.float())
        assert got.shape == (2, 32, 32) and torch.isfinite(got).all()


def test_swin_channels_last_refused_then_right_with_nhwc() -> None:
    torch.manual_seed(1)
    model = tv_models.SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                                      window_size=[4, 4], num_classes=3).eval().to(DEVICE).double()
    x = torch.randn(2, 3, 32, 32, generator=gen(1), dtype=torch.float64).to(DEVICE)
    with pytest.raises(ValueError, match=r"looks channels-last .*fastcam\.reshape\.nhwc"):
        fastcam.GradCAM(model, "features.-1")(x)
    classes = torch.tensor([0, 1], device=DEVICE)
    lowres, maps = hand_gradcam(model, model.features[-1], x, class_score(classes), lambda t: t.permute(0, 3, 1, 2))
    exp = fastcam.GradCAM(model, "features.-1", reshape_transform=fastcam.reshape.nhwc).explain(x, classes)
    assert_maps_close(exp.lowres.cpu(), exp.maps.cpu(), lowres.cpu(), maps.cpu())

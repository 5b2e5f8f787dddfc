"""Models users bring, as CI stand-ins, and the float64 hand computation they are checked against.

- `hf_model(kind)`: small randomly initialised Hugging Face `transformers` classifiers built from configs
  (ResNet, ConvNeXt, ViT, DeiT with a distillation token, DINOv2 with register tokens, Swin); nothing is
  downloaded. Each comes with the layer to explain and the hand reshape of its output to (B, C, h, w).
- `hand_gradcam`: Grad-CAM written out step by step (forward hook, `torch.autograd.grad`, reshape, mean
  gradients, weighted sum, ReLU, upsampling, max-normalisation) with no fastcam code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

ToMaps = Callable[[Tensor], Tensor]


@dataclass
class Case:
    """A model, the layer to explain, the image size it takes and the hand layout of that layer's output."""

    model: nn.Module
    layer: str
    size: tuple[int, int]
    to_maps: ToMaps          # raw layer output (first element of a tuple) -> (B, C, h, w), by hand
    transform: Any = None    # the fastcam.reshape helper a user passes (None for channels-first maps)


def _tokens(prefix: int, grid: tuple[int, int]) -> ToMaps:
    def to_maps(t: Tensor) -> Tensor:
        b, _, c = t.shape
        return t[:, prefix:].reshape(b, grid[0], grid[1], c).permute(0, 3, 1, 2)
    return to_maps


def hf_model(kind: str) -> Case:
    """A small random-init Hugging Face classifier (3 labels, eval mode) and its case (see the module doc)."""
    transformers = pytest.importorskip("transformers")
    import fastcam.reshape as R

    torch.manual_seed(0)
    if kind == "resnet":
        config = transformers.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                           layer_type="basic", num_labels=3)
        case = Case(transformers.ResNetForImageClassification(config), "resnet.encoder.stages.1", (32, 32), lambda t: t)
    elif kind == "convnext":
        config = transformers.ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                             patch_size=2, num_labels=3)
        case = Case(transformers.ConvNextForImageClassification(config), "convnext.encoder.stages.1", (32, 32), lambda t: t)
    elif kind == "vit":  # a non-square patch grid: 32 x 48 images, 8 x 8 patches -> 4 x 6 tokens after CLS
        config = transformers.ViTConfig(image_size=(32, 48), patch_size=8, hidden_size=16, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=32, num_labels=3)
        case = Case(transformers.ViTForImageClassification(config), "vit.layers.1.layernorm_before", (32, 48),
                    _tokens(1, (4, 6)), R.vit(1, grid=(4, 6)))
    elif kind == "deit":  # CLS + distillation token
        config = transformers.DeiTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=32, num_labels=3)
        case = Case(transformers.DeiTForImageClassificationWithTeacher(config), "deit.layers.1.layernorm_before",
                    (32, 32), _tokens(2, (4, 4)), R.vit(2))
    elif kind == "dinov2_registers":  # CLS + 4 register tokens; the head reads CLS and the mean patch token
        config = transformers.Dinov2WithRegistersConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                                        num_attention_heads=2, mlp_ratio=2, num_register_tokens=4,
                                                        num_labels=3)
        model = transformers.Dinov2WithRegistersForImageClassification(config)
        layer = next(n for n, _ in model.named_modules() if n.endswith("layer.1") or n.endswith("layers.1"))
        case = Case(model, layer, (32, 32), _tokens(5, (4, 4)), R.vit(5))
    elif kind == "swin":  # stages return (tokens (B, L, C), reshaped, attentions)
        config = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                                         window_size=4, num_labels=3)
        case = Case(transformers.SwinForImageClassification(config), "swin.encoder.layers.1", (32, 32),
                    _tokens(0, (4, 4)), R.swin())
    else:
        raise ValueError(kind)
    case.model.eval()
    return case


def hand_gradcam(model: nn.Module, layer: nn.Module, images: Tensor, score: Callable[[Any], Tensor],
                 to_maps: ToMaps) -> tuple[Tensor, Tensor]:
    """Grad-CAM by hand: -> (lowres (B, *spatial), maps (B, *image size)), in the images' dtype."""
    seen: list[Tensor] = []

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        seen.append(output[0] if isinstance(output, (tuple, list)) else output)

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            output = model(images)
            (grad,) = torch.autograd.grad(score(output).sum(), seen[0])
    finally:
        handle.remove()
    acts, grads = to_maps(seen[0].detach()), to_maps(grad)
    spatial = tuple(range(2, acts.dim()))
    weights = grads.mean(dim=spatial)
    lowres = torch.relu((weights.view(*weights.shape, *([1] * len(spatial))) * acts).sum(dim=1))
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    up = F.interpolate(lowres.unsqueeze(1), size=tuple(images.shape[2:]), mode=mode, align_corners=False).squeeze(1)
    peak = up.flatten(1).amax(dim=1).view(-1, *([1] * len(spatial)))
    return lowres, up / peak


def class_score(classes: Tensor) -> Callable[[Any], Tensor]:
    """The hand score of class `classes[b]` for image b from a tensor or `ModelOutput`."""
    def score(output: Any) -> Tensor:
        logits = output if isinstance(output, Tensor) else output.logits
        return logits.gather(1, classes.view(-1, 1)).squeeze(1)
    return score


def assert_maps_close(got_lowres: Tensor, got_maps: Tensor, lowres: Tensor, maps: Tensor, tol: float = 1e-5) -> None:
    """fastcam's float32 maps against a float64 hand computation, to `tol` relative to each map's scale.

    An image whose hand map is all zero (no positive evidence for its target in a random network) must be
    all zero in fastcam too; at least one image must have a non-zero map, so the comparison is not vacuous.
    """
    assert got_lowres.shape == lowres.shape and got_maps.shape == maps.shape
    peak = lowres.flatten(1).amax(dim=1)
    assert (peak > 0).any(), "the hand maps are all zero: the comparison would be vacuous"
    zero = peak == 0
    assert (got_maps[zero] == 0).all() and (got_lowres[zero] == 0).all()
    scale = torch.where(zero, torch.ones_like(peak), peak).view(-1, *([1] * (lowres.dim() - 1)))
    torch.testing.assert_close(got_lowres.double() / scale, lowres.double() / scale, rtol=tol, atol=tol)
    hand = torch.where(zero.view(-1, *([1] * (maps.dim() - 1))), torch.zeros_like(maps), maps)
    torch.testing.assert_close(got_maps.double(), hand.double(), rtol=tol, atol=tol)


def import_or_skip(name: str) -> Any:
    """`name` imported, or the calling test module skipped with the reason. Unlike `pytest.importorskip`,
    a package that is installed but fails to import (torchvision and timm against a torch they were not
    built for raise RuntimeError) skips too."""
    import importlib

    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here"
        pytest.skip(f"{name} does not import here ({type(exc).__name__}: {exc}); these tests run where it "
                    "does (the GPU machine has torchvision and timm)", allow_module_level=True)

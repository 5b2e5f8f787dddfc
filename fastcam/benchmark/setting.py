"""What one benchmark run times: its configuration, and the model, batch and targets every contender shares."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fastcam.benchmark.contenders import CONTENDER_KEYS, DEFAULT_CONTENDER_KEYS
from fastcam._device import check_amp, parse_device
from fastcam.targets import primary_tensor


@dataclass
class BenchConfig:
    """The settings of a benchmark run (recorded in its JSON).

    Attributes:
        model: a model spec (`fastcam.models.load_model`: the grammar of every command; a bare name is
            torchvision's), built with random weights, e.g. "fastcam:resnet18" or "hf:FOLDER".
        size, batch: square input side and images per batch.
        device: "cuda" or "cpu"; amp: None, "bf16" or "fp16" (every contender's call autocast).
        channels_last: the model and the batch in channels_last memory format (the fast layout for
            convolutions under bf16/fp16 on tensor cores).
        layer: the target layer (default layer4); num_classes: the built model's classes.
        warmup, repeats: untimed and timed calls per contender.
        scorecam_batch_size: fastcam's perturbed inputs per forward (Score-CAM's family's masked inputs,
            Ablation-CAM's ablated copies); peer_scorecam_batch_size:
            torchcam's / pytorch-grad-cam's (default: their own).
        contenders: keys of `CONTENDERS` to run (default: `DEFAULT_CONTENDER_KEYS`).
        seed: of the random batch.
        interleave: one timed call per contender per round (False: each contender's calls in a row).
        max_time: stop timing a contender after this many seconds of timed calls (at least one call).
    """

    model: str = "fastcam:resnet18"
    size: int = 224
    batch: int = 64
    device: str = "cuda"
    amp: str | None = None
    channels_last: bool = False
    layer: str | None = None
    num_classes: int | None = None
    warmup: int = 2
    repeats: int = 10
    scorecam_batch_size: int = 64
    peer_scorecam_batch_size: int | None = None
    contenders: tuple[str, ...] = DEFAULT_CONTENDER_KEYS
    seed: int = 0
    interleave: bool = True
    max_time: float | None = None

    def __post_init__(self) -> None:
        unknown = [k for k in self.contenders if k not in CONTENDER_KEYS]
        if unknown:
            raise ValueError(f"unknown contenders {unknown}; choose from {', '.join(CONTENDER_KEYS)}")
        check_amp(self.amp)
        for name in ("size", "batch", "repeats", "scorecam_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.max_time is not None and self.max_time <= 0:
            raise ValueError(f"max_time must be positive, got {self.max_time}")


@dataclass
class Setting:
    """What a contender needs: the model, its target layer, the batch and the target classes."""

    model: nn.Module
    layer_name: str
    layer: nn.Module
    images: Tensor
    targets: Tensor
    num_classes: int
    config: BenchConfig
    softcam_net: nn.Module | None = None
    softcam_targets: Tensor | None = None


def resolve_layer_name(model: nn.Module, layer: str | None) -> str:
    """The given target layer, else "layer4" when the model has one (ResNets)."""
    if layer is not None:
        return layer
    if hasattr(model, "layer4"):
        return "layer4"
    raise ValueError("cannot guess the target layer of this model: pass --layer (e.g. features.29)")


def make_setting(config: BenchConfig, model: nn.Module | None = None) -> Setting:
    """The model (built from `config.model` unless given) on the device in eval mode, its target layer,
    a seeded batch of N(0, 1) images and the model's predicted classes as targets.

    A model whose output is not a tensor (a Hugging Face `ModelOutput`) is timed behind
    `fastcam.models.LogitsOnly` by every contender alike: the peers take only tensor outputs."""
    from fastcam._validation import resolve_layer
    from fastcam.models import LogitsOnly, load_model

    device = parse_device(config.device)
    if model is None:
        model = load_model(config.model, num_classes=config.num_classes).model
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device).eval().to(memory_format=fmt)
    layer_name, layer = resolve_layer(model, resolve_layer_name(model, config.layer))
    generator = torch.Generator().manual_seed(config.seed)
    images = torch.randn(config.batch, 3, config.size, config.size, generator=generator).to(device)
    images = images.contiguous(memory_format=fmt)
    try:
        with torch.inference_mode():
            output = model(images)
    except Exception as exc:  # noqa: BLE001 - the model's own error on this batch, said plainly
        raise ValueError(f"model {config.model!r} failed on the benchmark batch {tuple(images.shape)}: "
                         f"{type(exc).__name__}: {exc} (check --size and --layer)") from exc
    logits = primary_tensor(output)  # a Hugging Face ModelOutput: its logits
    if not isinstance(output, torch.Tensor):
        model = LogitsOnly(model)
        layer_name = f"net.{layer_name}"
    if logits.dim() != 2:
        raise ValueError(f"model {config.model!r} returns {tuple(logits.shape)} scores, not (batch, classes)")
    return Setting(model=model, layer_name=layer_name, layer=layer, images=images,
                   targets=logits.argmax(dim=1).clone(), num_classes=int(logits.shape[1]), config=config)

"""Flags that several sub-commands share: the model group (spec, weights, classes, channels, layer) and --size."""
from __future__ import annotations

import argparse

SPEC_HELP = ("torchvision:NAME, timm:NAME, hf:PATH (a local Hugging Face folder; nothing is downloaded), "
             "fastcam:NAME (fastcam.models builders: resnet18, tiny_resnet, tiny_resnet3d, ...) or module:factory for "
             "your own code (imported from the current directory first, as python -m does); a bare NAME is "
             "torchvision's. Preprocessing follows the model's own recipe unless --size/--mean/--std say otherwise")
WEIGHTS_HELP = "safetensors file, or a state dict loaded with torch.load(weights_only=True)"


def add_model_group(p: argparse.ArgumentParser, *, weights_help: str = WEIGHTS_HELP,
                    layer_help: str = "target layer, dotted module name") -> argparse._ArgumentGroup:
    """--model, --weights, --num-classes, --in-channels, --layer: how `fastcam.models.load_model` builds a model."""
    model = p.add_argument_group("model")
    model.add_argument("--model", required=True, metavar="SPEC", help=SPEC_HELP)
    model.add_argument("--weights", metavar="FILE", help=weights_help)
    model.add_argument("--num-classes", type=int, metavar="K", help="classes of the model (builders and torchvision)")
    model.add_argument("--in-channels", type=int, metavar="C", help="input channels (fastcam.models builders)")
    model.add_argument("--layer", metavar="NAME", help=layer_help)
    return model


def parse_size(values: list[int] | None, *, volumes: bool = False) -> int | tuple[int, ...] | None:
    """--size N or --size H W (--size D H W for volumes)."""
    if values is None:
        return None
    allowed = (1, 3) if volumes else (1, 2)
    if len(values) not in allowed:
        raise ValueError(f"--size takes {' or '.join(map(str, allowed))} values{' for volumes' if volumes else ''}, "
                         f"got {len(values)}")
    return values[0] if len(values) == 1 else tuple(values)

"""Flags that several sub-commands share: the model group (spec, weights, classes, channels, layer) and --size."""
from __future__ import annotations

import argparse
import json

from fastcam.methods.registry import display_name, method_names

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


def method_arg(text: str) -> tuple[str, object]:
    """`key=value` -> (key, value) with the value parsed as JSON when it can be (ints, floats, bools)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--method-arg expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_method_group(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--method, --method-arg, --reshape: the explainer `MethodInfo` builds on the model (explain, serve)."""
    method = p.add_argument_group("method")
    method.add_argument("--method", choices=method_names(), default="gradcam",
                        help=", ".join(f"{m} ({display_name(m)})" for m in method_names()))
    method.add_argument("--method-arg", action="append", type=method_arg, default=[], metavar="KEY=VALUE",
                        help="extra keyword argument of the method's constructor (repeatable), e.g. "
                        "--method-arg batch_size=64")
    method.add_argument("--reshape", metavar="LAYOUT", default=None,
                        help="layout of the target layer's output when it is not (B, C, h, w): vit[:PREFIX[:HxW]] "
                        "(ViT tokens; PREFIX = CLS/distillation/register tokens, default the model's own or 1), "
                        "swin[:HxW] (Swin tokens or channels-last stages), nhwc (channels-last maps)")
    return method


def parse_size(values: list[int] | None, *, volumes: bool = False) -> int | tuple[int, ...] | None:
    """--size N or --size H W (--size D H W for volumes)."""
    if values is None:
        return None
    allowed = (1, 3) if volumes else (1, 2)
    if len(values) not in allowed:
        raise ValueError(f"--size takes {' or '.join(map(str, allowed))} values{' for volumes' if volumes else ''}, "
                         f"got {len(values)}")
    return values[0] if len(values) == 1 else tuple(values)

"""`fastcam export`: SoftCAM or pooled-head Grad-CAM as one forward-only graph file, checked before writing."""
from __future__ import annotations

import argparse

from fastcam.cli.common import WEIGHTS_HELP, add_model_group, parse_size
from fastcam.deploy.options import DTYPE_NAMES, EXPORTABLE, FORMATS, TARGETS
from fastcam.methods.registry import display_name

NAME = "export"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare `fastcam export` and its flags."""
    p = sub.add_parser(
        NAME,
        help="export " + " or ".join(display_name(m) for m in EXPORTABLE) + " as one forward-only graph "
        "(ONNX, torch.export) for serving",
        description="Build the model, wrap it in the explainer and write one graph: images [, target] -> logits, "
        "maps, lowres (and SoftCAM's evidence), batch and spatial size dynamic. Grad-CAM is exported only when "
        "the model after --layer is [ReLU] -> global average pool -> [flatten, dropout] -> Linear (read with "
        "torch.fx). Nothing is written unless the graph and the exported file match the PyTorch explainer on "
        "seeded random example images (1e-5 in float32).",
    )
    add_model_group(p, weights_help=WEIGHTS_HELP + "; for softcam, the SoftCAM network's weights",
                    layer_help="Grad-CAM's target layer: the last feature map (layer4 of a ResNet, features of a DenseNet)")
    graph = p.add_argument_group("graph")
    graph.add_argument("--method", choices=EXPORTABLE, required=True,
                       help=", ".join(f"{m} ({display_name(m)})" for m in EXPORTABLE))
    graph.add_argument("--out", required=True, metavar="FILE", help="the graph file (model.onnx, model.pt2)")
    graph.add_argument("--format", choices=FORMATS, default="onnx")
    graph.add_argument("--targets", choices=TARGETS, default="predicted",
                       help="predicted: argmax inside the graph; given: a second input `target` (B,) int64")
    graph.add_argument("--dtype", choices=DTYPE_NAMES, default="float32",
                       help="weights and images of the graph (outputs stay float32); bfloat16 only with torch.export")
    check = p.add_argument_group("example images (traced, and the batch the checks run on)")
    check.add_argument("--size", type=int, nargs="+", metavar="N",
                       help="H W (or N N); default: the model spec's size, else 224")
    check.add_argument("--batch", type=int, default=2, help="how many example images")
    check.add_argument("--seed", type=int, default=0, help="seed of their standard normal pixels")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, then say what was written."""
    from fastcam.deploy import export_spec

    info = export_spec(args.model, args.out, method=args.method, weights=args.weights, layer=args.layer,
                       num_classes=args.num_classes, in_channels=args.in_channels, size=parse_size(args.size),
                       batch=args.batch, format=args.format, targets=args.targets, dtype=args.dtype, seed=args.seed)
    opset = f", opset {info.opset}" if info.opset else ""
    print(f"fastcam export: {display_name(info.method)} -> {info.path} ({info.format}{opset}, {info.dtype}); "
          f"inputs {', '.join(info.inputs)}; outputs {', '.join(info.outputs)}; largest deviation from PyTorch "
          f"{max(info.max_error.values()):.1e} (checked with {info.checked_with})")
    return 0

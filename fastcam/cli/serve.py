"""`fastcam serve`: explanations over HTTP on Ray Serve (the `serve` extra), until SIGINT or SIGTERM."""
from __future__ import annotations

import argparse
from pathlib import Path

from fastcam.cli.common import add_method_group, add_model_group, parse_size
from fastcam.methods.registry import display_name, method_names

NAME = "serve"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare `fastcam serve` and its flags."""
    p = sub.add_parser(
        NAME,
        help="serve explanations over HTTP (Ray Serve, dynamic batching)",
        description="Serve explanations over HTTP on Ray Serve: POST /explain takes one image file (PNG, JPEG, "
        "TIFF, DICOM) and answers JSON (target, predicted, top-5 probabilities, the layer-resolution map) or, with "
        "?format=png, the overlay; GET /healthz, GET / describe the service. Concurrent requests are explained "
        "together in batches. Starts a local Ray on 127.0.0.1 unless --ray-address is given; SIGINT or SIGTERM "
        "stops it after the requests in flight. Needs the serve extra (pip install 'fastcam[serve]').",
    )
    add_model_group(p, layer_help="target layer, dotted module name (not needed for "
                    + ", ".join(display_name(m) for m in method_names(post_hoc=False)) + ")")
    method = add_method_group(p)
    method.add_argument("--classes", metavar="FILE", help="class names: one per line, or a JSON list (index order)")
    prep = p.add_argument_group("preprocessing and device")
    prep.add_argument("--size", type=int, nargs="+", metavar="N",
                      help="model input H W (or N N); default: the model's own preprocessing")
    prep.add_argument("--mean", type=float, nargs="+", help="normalisation mean per channel (after scaling to [0, 1])")
    prep.add_argument("--std", type=float, nargs="+", help="normalisation std per channel")
    prep.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when available)")
    prep.add_argument("--amp", choices=("bf16", "fp16"), default=None, help="autocast the model's forward passes")
    prep.add_argument("--colormap", default="jet", help="matplotlib colormap of the PNG overlays")
    prep.add_argument("--alpha", type=float, default=0.5, help="opacity of the map in the PNG overlays")
    service = p.add_argument_group("service")
    service.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                         "only)")
    service.add_argument("--port", type=int, default=8000)
    service.add_argument("--replicas", type=int, default=1, help="replicas (each loads the model once)")
    service.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs Ray reserves for each replica")
    service.add_argument("--max-batch-size", type=int, default=32, help="most requests explained together")
    service.add_argument("--batch-wait-ms", type=float, default=5.0,
                         help="longest a request waits for others to join its batch")
    service.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body, MiB (413 beyond)")
    service.add_argument("--max-pixels", type=int, default=None,
                         help="most pixels an image may decode to (decompression bombs; 413 beyond); default 64 million")
    service.add_argument("--ray-address", default=None, metavar="ADDR",
                         help="a running Ray cluster (auto, ray://HOST:PORT); default: start a local Ray on 127.0.0.1")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the options from the flags, serve until SIGINT or SIGTERM."""
    try:
        from fastcam.serve.engine import ServeOptions, read_classes
        from fastcam.serve.runner import run_until_signal
    except ImportError as exc:
        raise ValueError(f"fastcam serve needs Ray Serve: pip install 'fastcam[serve]' ({exc})") from None
    size = parse_size(args.size)
    classes = read_classes(Path(args.classes).read_text(encoding="utf-8")) if args.classes else None
    limits = {"max_pixels": args.max_pixels} if args.max_pixels is not None else {}
    options = ServeOptions(
        model=args.model, layer=args.layer, method=args.method, weights=args.weights, num_classes=args.num_classes,
        in_channels=args.in_channels, method_kwargs=dict(args.method_arg), reshape=args.reshape, size=size,
        mean=tuple(args.mean) if args.mean else None, std=tuple(args.std) if args.std else None, amp=args.amp,
        device=args.device, classes=classes, max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms,
        max_body_mb=args.max_body_mb, colormap=args.colormap, alpha=args.alpha, **limits)
    run_until_signal(options, host=args.host, port=args.port, replicas=args.replicas, ray_address=args.ray_address,
                     cpus_per_replica=args.cpus_per_replica)
    return 0

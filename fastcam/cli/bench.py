"""`fastcam bench`: time every explainer (fastcam's and the peer libraries') on one model, batch and device."""
from __future__ import annotations

import argparse

from fastcam._device import AMP_NAMES
from fastcam.benchmark.contenders import CONTENDER_KEYS, DEFAULT_CONTENDER_KEYS
from fastcam.cli.common import SPEC_HELP

NAME = "bench"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare `fastcam bench` and its flags."""
    p = sub.add_parser(
        NAME,
        help="time every explainer (fastcam's and the peer libraries') on one model, batch and device",
        description="Time plain inference, fastcam's methods, torchcam, captum, pytorch-grad-cam (when importable) "
        "and the CF-CAM released code's per-image loop on the same model, inputs and device; print Markdown "
        "tables (images/s, ratios) and write JSON with the environment.",
    )
    p.add_argument("--model", default="fastcam:resnet18", metavar="SPEC",
                   help=SPEC_HELP.split(". Preprocessing")[0] + "; random weights (default fastcam:resnet18)")
    p.add_argument("--layer", default=None, help="target layer (default layer4)")
    p.add_argument("--num-classes", type=int, default=None, help="classes of the built model (default: the builder's)")
    p.add_argument("--size", type=int, default=224, help="square input side")
    p.add_argument("--batch", type=int, default=64, help="images per batch")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--amp", choices=AMP_NAMES, default=None, help="autocast every contender's call")
    p.add_argument("--channels-last", action="store_true",
                   help="the model and the batch in channels_last memory format (with --amp: tensor-core layout)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per contender")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per contender")
    p.add_argument("--scorecam-batch-size", type=int, default=64,
                   help="fastcam's perturbed inputs per forward (Score-CAM's masked inputs, Ablation-CAM's ablated copies)")
    p.add_argument("--peer-scorecam-batch-size", type=int, default=None,
                   help="torchcam / pytorch-grad-cam ScoreCAM and pytorch-grad-cam AblationCAM batch size, also given to "
                   "the compat module's same calls (default: their own, 32 / 16 / 32)")
    p.add_argument("--contenders", default=None, metavar="LIST",
                   help=f"comma-separated subset of: {', '.join(CONTENDER_KEYS)} (default: all but "
                   f"{', '.join(k for k in CONTENDER_KEYS if k not in DEFAULT_CONTENDER_KEYS) or 'none'})")
    p.add_argument("--out", default=None, metavar="DIR|FILE.json",
                   help="write the JSON record there (a folder: a file named after the setting inside it); "
                   "default: no file, the tables are printed only")
    p.add_argument("--markdown", default=None, metavar="FILE.md", help="also write the Markdown tables here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-time", type=float, default=None, metavar="S",
                   help="stop timing a contender after S seconds of timed calls (at least one call; for slow "
                   "CPU runs, e.g. Score-CAM)")
    p.add_argument("--sequential", action="store_true",
                   help="time each contender's calls in a row instead of interleaving rounds")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Configure the benchmark from the flags, run it, print the tables, write the JSON (and Markdown)."""
    from fastcam._device import default_device
    from fastcam.benchmark import BenchConfig, run_benchmark, write_results

    contenders = (tuple(c.strip() for c in args.contenders.split(",") if c.strip()) if args.contenders
                  else DEFAULT_CONTENDER_KEYS)
    config = BenchConfig(model=args.model, size=args.size, batch=args.batch,
                         device=args.device or default_device(), amp=args.amp,
                         channels_last=args.channels_last,
                         layer=args.layer, num_classes=args.num_classes, warmup=args.warmup, repeats=args.repeats,
                         scorecam_batch_size=args.scorecam_batch_size,
                         peer_scorecam_batch_size=args.peer_scorecam_batch_size, contenders=contenders,
                         seed=args.seed, interleave=not args.sequential, max_time=args.max_time)
    report = run_benchmark(config, progress=not args.quiet)
    print(report.markdown())
    path = write_results(report, args.out, args.markdown)  # nothing lands in the user's folder unless asked for
    print(f"fastcam bench: results -> {path}" if path is not None
          else "fastcam bench: no --out given: the JSON record is not written")
    return 0

"""The `fastcam` command line (also `python -m fastcam`, and `torchrun ... -m fastcam`).

Each subcommand has one `_add_<name>_parser(sub)` function that declares its flags and sets
`func=` to the function that runs it; `SUBCOMMANDS` registers them in one place. Heavy imports
(torch, zarr, matplotlib) happen inside the run functions so `fastcam --help` stays instant.

    fastcam explain --model tiny_resnet --weights w.safetensors --layer layer4 --method gradcam \
        --data images/ --out runs/gradcam --overlays --report
    fastcam demo --out runs/demo
    fastcam report runs/demo/gradcam runs/demo/cfcam --out report.html
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

METHODS = ("gradcam", "gradcampp", "scorecam", "cfcam", "softcam")


def _parse_method_arg(text: str) -> tuple[str, object]:
    """`key=value` -> (key, value) with the value parsed as JSON when it can be (ints, floats, bools)."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--method-arg expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _add_explain_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="explain every image of a folder into a resumable run directory",
        description="Explain every image of a folder (PNG, JPEG, TIFF, DICOM) batch by batch into a resumable "
        "run directory (Zarr store + run.json). Re-running the same command resumes a killed run; a run "
        "directory written with other settings is refused. Under torchrun each rank explains a strided "
        "shard of the data.",
    )
    model = p.add_argument_group("model")
    model.add_argument("--model", required=True, metavar="SPEC",
                       help="a fastcam.models builder (resnet18, tiny_resnet, ...), a torchvision model name "
                       "(when torchvision is importable), or module:factory for your own code")
    model.add_argument("--weights", metavar="FILE",
                       help="safetensors file, or a state dict loaded with torch.load(weights_only=True)")
    model.add_argument("--num-classes", type=int, metavar="K", help="classes of the model (builders and torchvision)")
    model.add_argument("--in-channels", type=int, metavar="C", help="input channels (fastcam.models builders)")
    model.add_argument("--layer", metavar="NAME", help="target layer, dotted module name (not needed for softcam)")
    method = p.add_argument_group("method")
    method.add_argument("--method", choices=METHODS, default="gradcam")
    method.add_argument("--method-arg", action="append", type=_parse_method_arg, default=[], metavar="KEY=VALUE",
                        help="extra keyword argument of the method's constructor (repeatable), e.g. "
                        "--method-arg batch_size=64")
    method.add_argument("--targets", default="predicted", metavar="predicted|INT|FILE",
                        help="class to explain: the predicted class (default), one class index for all, or a "
                        "CSV/JSON file mapping relative image paths to class indices")
    data = p.add_argument_group("data and preprocessing")
    data.add_argument("--data", required=True, metavar="DIR", help="folder of images (searched recursively)")
    data.add_argument("--size", type=int, nargs="+", metavar="N", help="resize to H W (or N N); default: the "
                      "model spec's size (224 for torchvision models), else the images' own size")
    data.add_argument("--mean", type=float, nargs="+", help="normalisation mean per channel (after scaling to [0, 1])")
    data.add_argument("--std", type=float, nargs="+", help="normalisation std per channel")
    data.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    run = p.add_argument_group("run")
    run.add_argument("--out", required=True, metavar="RUN", help="run directory (created, or resumed)")
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when available); under "
                     "torchrun each rank uses cuda:LOCAL_RANK")
    run.add_argument("--amp", choices=("bf16", "fp16"), default=None, help="autocast the model's forward passes")
    run.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="storage dtype of the maps")
    run.add_argument("--no-resume", action="store_true",
                     help="refuse to continue an existing run directory instead of resuming it")
    out = p.add_argument_group("outputs")
    out.add_argument("--overlays", action="store_true", help="write PNG overlays (map on image) under RUN/overlays")
    out.add_argument("--colormap", default="jet", help="matplotlib colormap of the overlays")
    out.add_argument("--alpha", type=float, default=0.5, help="opacity of the map in the overlays")
    out.add_argument("--report", action="store_true", help="write RUN/report.html (implies --overlays)")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_explain)


def _run_explain(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fastcam.pipeline import explain_folder
    from fastcam.pipeline.distributed import torchrun_ranks

    if args.size is not None and len(args.size) not in (1, 2):
        raise ValueError(f"--size takes 1 or 2 values, got {len(args.size)}")
    targets = args.targets
    if targets not in (None, "predicted"):
        if str(targets).lstrip("-").isdigit():
            targets = int(targets)
        elif Path(targets).is_file():
            targets = Path(targets)
        else:
            raise ValueError(f"--targets must be 'predicted', a class index or an existing file, got {targets!r}")
    run = explain_folder(
        args.model, args.data, args.out, weights=args.weights, num_classes=args.num_classes,
        in_channels=args.in_channels, layer=args.layer, method=args.method, method_kwargs=dict(args.method_arg),
        targets=targets, size=args.size[0] if args.size and len(args.size) == 1 else args.size, mean=args.mean,
        std=args.std, workers=args.workers, batch_size=args.batch_size, device=args.device, amp=args.amp,
        dtype=args.dtype, resume=not args.no_resume, overlays=args.overlays, colormap=args.colormap,
        alpha=args.alpha, report=args.report, progress=not args.quiet)
    if torchrun_ranks().is_main:
        rate = run.meta.get("timings", {}).get("images_per_s")
        print(f"fastcam explain: {len(run)} images explained, {len(run.skipped)} skipped"
              f"{f', {rate} images/s' if rate else ''} -> {args.out}")
    return 0


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the built-in job: synthetic lesions, a small CNN + SoftCAM, all five methods, overlays, report",
        description="Generate the deterministic synthetic lesion dataset (ground-truth masks kept), train a small "
        "CNN and its SoftCAM conversion on CPU, explain the test split with Grad-CAM, Grad-CAM++, Score-CAM, "
        "CF-CAM and SoftCAM (one run directory per method under OUT), write overlays and OUT/report.html.",
    )
    p.add_argument("--out", default="runs/demo", metavar="DIR")
    p.add_argument("--quick", action="store_true", help="a tiny, fast configuration (CI): few images, one epoch")
    p.add_argument("--n-train", type=int, default=None, help="training images (default 512; --quick 48)")
    p.add_argument("--n-test", type=int, default=None, help="test images explained (default 48; --quick 4)")
    p.add_argument("--image-size", type=int, default=None, help="square image side, a multiple of 8 (default 48; --quick 32)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of the CNN (default 6; --quick 1)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from fastcam.demo import demo_cli

    return demo_cli(args)


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="one HTML report over one or more run directories of the same images",
        description="Write a self-contained static HTML report (opens from disk): a grid of images with each "
        "run's overlay, predicted class and score, and summary tables. Runs must cover the same images.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--out", required=True, metavar="HTML")
    p.add_argument("--data", metavar="DIR", help="image folder (default: the first run's data folder)")
    p.add_argument("--masks", metavar="DIR", help="ground-truth masks with the images' relative names")
    p.add_argument("--max-images", type=int, default=200, help="images shown in the grid")
    p.add_argument("--title", default="fastcam report")
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from fastcam.io.report import report_cli

    return report_cli(args)


def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="time every explainer (fastcam's and the peer libraries') on one model, batch and device",
        description="Time plain inference, fastcam's methods, torchcam, captum, pytorch-grad-cam (when importable) "
        "and the CF-CAM released code's per-image loop on the same model, inputs and device; print Markdown "
        "tables (images/s, ratios) and write JSON with the environment.",
    )
    p.add_argument("--model", default="resnet18", metavar="SPEC",
                   help="resnet18, resnet50 or any fastcam.models builder (random weights), or module:factory")
    p.add_argument("--layer", default=None, help="target layer (default layer4)")
    p.add_argument("--num-classes", type=int, default=None, help="classes of the built model (default: the builder's)")
    p.add_argument("--size", type=int, default=224, help="square input side")
    p.add_argument("--batch", type=int, default=64, help="images per batch")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--amp", choices=("bf16", "fp16"), default=None, help="autocast every contender's call")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per contender")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per contender")
    p.add_argument("--scorecam-batch-size", type=int, default=64, help="fastcam ScoreCAM masked inputs per forward")
    p.add_argument("--peer-scorecam-batch-size", type=int, default=None,
                   help="torchcam / pytorch-grad-cam ScoreCAM batch size (default: their own, 32 / 16)")
    p.add_argument("--contenders", default=None, metavar="LIST",
                   help="comma-separated subset of: inference, gradcam, gradcampp, scorecam, cfcam, softcam-inference, "
                   "softcam, torchcam-gradcam, torchcam-scorecam, captum-gradcam, pgc-gradcam, pgc-scorecam, "
                   "released-cfcam (default: all)")
    p.add_argument("--out", default="bench/results", metavar="DIR|FILE.json", help="where the JSON goes")
    p.add_argument("--markdown", default=None, metavar="FILE.md", help="also write the Markdown tables here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-time", type=float, default=None, metavar="S",
                   help="stop timing a contender after S seconds of timed calls (at least one call; for slow "
                   "CPU runs, e.g. Score-CAM)")
    p.add_argument("--sequential", action="store_true",
                   help="time each contender's calls in a row instead of interleaving rounds")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    import torch

    from fastcam.benchmark import CONTENDER_KEYS, BenchConfig, run_benchmark, write_results

    contenders = (tuple(c.strip() for c in args.contenders.split(",") if c.strip()) if args.contenders
                  else CONTENDER_KEYS)
    config = BenchConfig(model=args.model, size=args.size, batch=args.batch,
                         device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"), amp=args.amp,
                         layer=args.layer, num_classes=args.num_classes, warmup=args.warmup, repeats=args.repeats,
                         scorecam_batch_size=args.scorecam_batch_size,
                         peer_scorecam_batch_size=args.peer_scorecam_batch_size, contenders=contenders, seed=args.seed,
                         interleave=not args.sequential, max_time=args.max_time)
    report = run_benchmark(config, progress=not args.quiet)
    print(report.markdown())
    path = write_results(report, args.out, args.markdown)
    print(f"fastcam bench: results -> {path}")
    return 0


def _add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="faithfulness, localisation and robustness metrics of stored runs: tables and plots",
        description="Compute deletion/insertion AUC, Average Drop / Increase in Confidence, pointing game, energy "
        "pointing game, activation precision/sensitivity (with --masks) and gradient-noise robustness for one or "
        "more run directories (a folder of runs works too). Writes RUN/eval/metrics.{md,json}, a combined table "
        "and plots (curves.png, metrics.png, robustness.png) and links them into existing HTML reports.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--metrics", default="all", metavar="LIST",
                   help="comma-separated: deletion, insertion, average_drop, increase, pointing_game, "
                   "energy_pointing_game, precision, sensitivity, robustness, or the groups faithfulness, "
                   "localization, all (default)")
    p.add_argument("--masks", metavar="DIR", help="ground-truth masks with the images' relative names (nonzero = region)")
    p.add_argument("--labels", metavar="CSV", help="true labels (path,label) for accuracy (default: DATA/labels.csv if any)")
    p.add_argument("--out", metavar="DIR", help="combined outputs (default: <the runs' common parent>/eval)")
    p.add_argument("--model", metavar="SPEC", help="model spec (default: the run's)")
    p.add_argument("--weights", metavar="FILE", help="model weights (default: the run's record)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=16, help="images per evaluation batch")
    p.add_argument("--steps", type=int, default=100, help="deletion/insertion steps")
    p.add_argument("--sigmas", default=None, help="gradient-noise sigmas (default 0.1,1,2,...,10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from fastcam.evaluate import evaluate, markdown_table, parse_metrics
    from fastcam.metrics.robustness import DEFAULT_SIGMAS

    sigmas = tuple(float(s) for s in args.sigmas.split(",")) if args.sigmas else DEFAULT_SIGMAS
    results, out = evaluate(args.runs, args.metrics, masks=args.masks, out=args.out, spec=args.model,
                            weights=args.weights, device=args.device, batch_size=args.batch_size, steps=args.steps,
                            sigmas=sigmas, labels=args.labels, progress=not args.quiet, seed=args.seed)
    print(markdown_table(results, parse_metrics(args.metrics)))
    print(f"fastcam eval: {len(results)} run(s) -> {out}")
    return 0


#: every subcommand, registered in one place: add yours here (issue 6: eval, bench)
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_explain_parser,
    _add_demo_parser,
    _add_report_parser,
    _add_bench_parser,
    _add_eval_parser,
]


def build_parser() -> argparse.ArgumentParser:
    from fastcam import __version__

    parser = argparse.ArgumentParser(prog="fastcam", description="Fast, batched CNN explanations.")
    parser.add_argument("--version", action="version", version=f"fastcam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fastcam` console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:  # user errors: a clear message, no traceback
        print(f"fastcam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastcam {args.command}: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

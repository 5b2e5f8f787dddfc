"""`fastcam explain`: explain every image of a folder into a resumable run directory."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from fastcam._device import AMP_NAMES
from fastcam.cli.common import add_method_group, add_model_group, parse_size
from fastcam.methods.registry import display_name, method_names

NAME = "explain"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare `fastcam explain` and its flags."""
    p = sub.add_parser(
        NAME,
        help="explain every image of a folder into a resumable run directory",
        description="Explain every image of a folder (PNG, JPEG, TIFF, DICOM) batch by batch into a resumable "
        "run directory (Zarr store + run.json). Re-running the same command resumes a killed run and "
        "recomputes damaged batches and batches whose input files changed; a run directory written with "
        "other settings, or being written by another process, is refused. Under torchrun each rank explains a "
        "strided shard of the data.",
    )
    add_model_group(p, layer_help="target layer, dotted module name (not needed for "
                    + ", ".join(display_name(m) for m in method_names(post_hoc=False)) + ")")
    method = add_method_group(p)
    method.add_argument("--targets", default="predicted", metavar="predicted|INT|FILE",
                        help="class to explain: the predicted class (default), one class index for all, or a "
                        "CSV/JSON file mapping relative image paths to class indices")
    data = p.add_argument_group("data and preprocessing")
    data.add_argument("--data", required=True, metavar="DIR",
                      help="folder of images (searched recursively); with --engine ray also a folder URI of any file "
                      "system pyarrow reads (s3://bucket/prefix/, gs://...)")
    data.add_argument("--volumes", action="store_true",
                      help="the folder holds 3-D volumes: NIfTI (.nii, .nii.gz), NumPy .npy, or DICOM series (one "
                      "folder of slices each); maps are 3-D and the report shows their central slices")
    data.add_argument("--size", type=int, nargs="+", metavar="N", help="resize to H W (or N N; D H W for volumes); "
                      "default: the model's own preprocessing (torchvision's weights' transforms, timm's data "
                      "config, the Hugging Face processor config), else the images' own size")
    data.add_argument("--mean", type=float, nargs="+", help="normalisation mean per channel (after scaling to [0, 1])")
    data.add_argument("--std", type=float, nargs="+", help="normalisation std per channel")
    data.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    run_group = p.add_argument_group("run")
    run_group.add_argument("--out", required=True, metavar="RUN", help="run directory (created, or resumed)")
    run_group.add_argument("--batch-size", type=int, default=32)
    run_group.add_argument("--max-skip-fraction", type=float, default=None, metavar="F",
                           help="stop with exit status 2, the run not complete, when more than this share of the "
                                "images cannot be explained, or when the first ones all fail for one reason "
                                "(default: explain_dataset's max_skip_fraction, 0.1; 1: never stop)")
    run_group.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when available); "
                           "under torchrun each rank uses cuda:LOCAL_RANK")
    run_group.add_argument("--amp", choices=AMP_NAMES, default=None, help="autocast the model's forward passes")
    run_group.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                           help="storage dtype of the maps")
    run_group.add_argument("--no-resume", action="store_true",
                           help="refuse to continue an existing run directory instead of resuming it")
    run_group.add_argument("--hash-inputs", action="store_true",
                           help="recognise changed input files by a hash of their content (default: size and "
                           "modification time) when resuming or repairing a run")
    engine = p.add_argument_group("engine")
    engine.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: this process (or each torchrun rank); ray: a Ray cluster, Ray Data reading and "
                        "decoding on CPU tasks and a pool of model actors (pip install 'fastcam[ray]'; docs/ray.md)")
    engine.add_argument("--ray-address", metavar="ADDR", default=None,
                        help="the Ray cluster (default: RAY_ADDRESS, else a local Ray started for the run)")
    engine.add_argument("--ray-actors", type=int, metavar="N", default=None,
                        help="actor pool size (default: one per GPU of the cluster, else 1)")
    engine.add_argument("--ray-gpus-per-actor", type=float, metavar="F", default=None,
                        help="GPUs per actor (default: 1 when the cluster has GPUs, else 0)")
    out = p.add_argument_group("outputs")
    out.add_argument("--overlays", action="store_true", help="write PNG overlays (map on image) under RUN/overlays")
    out.add_argument("--colormap", default="jet", help="matplotlib colormap of the overlays")
    out.add_argument("--alpha", type=float, default=0.5, help="opacity of the map in the overlays")
    out.add_argument("--report", action="store_true", help="write RUN/report.html (implies --overlays)")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _targets(text: str) -> str | int | Path:
    """--targets predicted|INT|FILE: the predicted class, one class index, or a targets file."""
    if text == "predicted":
        return text
    if text.lstrip("-").isdigit():
        return int(text)
    if Path(text).is_file():
        return Path(text)
    raise ValueError(f"--targets must be 'predicted', a class index or an existing file, got {text!r}")


def run(args: argparse.Namespace) -> int:
    """Build the model and preprocessing from the flags, explain the folder, print a summary."""
    from fastcam.errors import RandomWeightsWarning
    from fastcam.io.run import RunDirectory
    from fastcam.pipeline import explain_folder
    from fastcam.pipeline.distributed import torchrun_ranks

    def show(message: Warning | str, category: type[Warning], *rest: object, **kw: object) -> None:
        print(f"fastcam explain: warning: {category.__name__}: {message}", file=sys.stderr)

    RunDirectory(args.out).check_out("--out")  # refused before any work, naming the flag
    # the random-weights warning is printed when it arises (before the run), whatever the warning filters
    with warnings.catch_warnings():
        warnings.simplefilter("always", RandomWeightsWarning)
        warnings.showwarning = show  # restored when the block ends
        if args.engine == "ray":
            return _run_on_ray(args)
        result = explain_folder(
            args.model, args.data, args.out, weights=args.weights, num_classes=args.num_classes,
            in_channels=args.in_channels, layer=args.layer, method=args.method, method_kwargs=dict(args.method_arg),
            targets=_targets(args.targets), size=parse_size(args.size, volumes=args.volumes), mean=args.mean,
            std=args.std, workers=args.workers, reshape=args.reshape, volumes=args.volumes,
            batch_size=args.batch_size, device=args.device, amp=args.amp, dtype=args.dtype, resume=not args.no_resume,
            overlays=args.overlays, colormap=args.colormap, alpha=args.alpha, report=args.report,
            progress=not args.quiet, fingerprint="content" if args.hash_inputs else "stat",
            **({} if args.max_skip_fraction is None else {"max_skip_fraction": args.max_skip_fraction}))
    if torchrun_ranks().is_main:
        _summary(result, args.out)
    return 0


def _summary(result: Any, out: str) -> None:
    rate = result.meta.get("timings", {}).get("images_per_s")
    print(f"fastcam explain: {len(result)} images explained, {len(result.skipped)} skipped"
          f"{f', {rate} images/s' if rate else ''} -> {out}")


def _run_on_ray(args: argparse.Namespace) -> int:
    """--engine ray: the same run on a Ray cluster (`fastcam.ray.explain_dataset`)."""
    unsupported = [flag for flag, used in (("--volumes", args.volumes), ("--overlays", args.overlays),
                                           ("--report", args.report), ("--device", args.device is not None),
                                           ("--workers", args.workers)) if used]
    if unsupported:
        raise ValueError(f"{', '.join(unsupported)} cannot be used with --engine ray (actors choose their GPU; "
                         "decoding runs in Ray tasks); `fastcam report RUN` draws a finished run's report")
    try:
        from fastcam.ray import explain_dataset
    except ImportError as exc:
        raise ValueError(f"--engine ray needs Ray Data: pip install 'fastcam[ray]' ({exc})") from None
    result = explain_dataset(
        args.model, args.data, args.out, weights=args.weights, num_classes=args.num_classes,
        in_channels=args.in_channels, layer=args.layer, method=args.method, method_kwargs=dict(args.method_arg),
        targets=_targets(args.targets), size=parse_size(args.size), mean=args.mean, std=args.std,
        reshape=args.reshape, batch_size=args.batch_size, amp=args.amp, dtype=args.dtype, resume=not args.no_resume,
        progress=not args.quiet, fingerprint="content" if args.hash_inputs else "stat", address=args.ray_address,
        actors=args.ray_actors, gpus_per_actor=args.ray_gpus_per_actor,
        **({} if args.max_skip_fraction is None else {"max_skip_fraction": args.max_skip_fraction}))
    _summary(result, args.out)
    return 0

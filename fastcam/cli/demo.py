"""`fastcam demo`: the built-in job, synthetic lesions explained by the demo's methods (or all), with overlays and a report."""
from __future__ import annotations

import argparse

from fastcam.methods.registry import display_name, method_names

NAME = "demo"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare `fastcam demo` and its flags."""
    methods, shown = method_names(), method_names(demo=True)
    p = sub.add_parser(
        NAME,
        help=f"the built-in job: synthetic lesions, a small CNN + SoftCAM, {len(shown)} methods (--methods all: "
        f"{len(methods)}), overlays, report",
        description="Generate the deterministic synthetic lesion dataset (ground-truth masks kept), train a small "
        "CNN and its SoftCAM conversion on CPU, explain the test split with "
        + ", ".join(display_name(m) for m in shown)
        + " (one run directory per method under OUT), write overlays and OUT/report.html.",
    )
    p.add_argument("--out", default="runs/demo", metavar="DIR")
    p.add_argument("--quick", action="store_true", help="a tiny, fast configuration (CI): few images, one epoch")
    p.add_argument("--n-train", type=int, default=None, help="training images (default 512; --quick 48)")
    p.add_argument("--n-test", type=int, default=None, help="test images explained (default 48; --quick 4)")
    p.add_argument("--image-size", type=int, default=None, help="square image side, a multiple of 8 (default 48; --quick 32)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of the CNN (default 6; --quick 1)")
    p.add_argument("--methods", default=",".join(shown),
                   help="'all', or a comma-separated subset of " + ",".join(methods) + f" (default: {','.join(shown)})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Size the demo from the flags, run it, say where the report is."""
    from fastcam.demo import DemoConfig, run_demo

    sizes = {k: v for k, v in {"n_train": args.n_train, "n_test": args.n_test, "image_size": args.image_size,
                               "epochs": args.epochs, "seed": args.seed}.items() if v is not None}
    config = DemoConfig.quick(**sizes) if args.quick else DemoConfig(**sizes)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    summary = run_demo(args.out, config, methods, device=args.device, progress=not args.quiet)
    print(f"fastcam demo: done. Open {summary['report']} in a browser; runs: "
          + ", ".join(f"{m}={p}" for m, p in summary["runs"].items()))
    return 0

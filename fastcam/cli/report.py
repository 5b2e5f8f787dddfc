"""`fastcam report`: one static HTML report over one or more run directories of the same images."""
from __future__ import annotations

import argparse

NAME = "report"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare `fastcam report` and its flags."""
    p = sub.add_parser(
        NAME,
        help="one HTML report over one or more run directories of the same images",
        description="Write a self-contained static HTML report (opens from disk): a grid of images with each "
        "run's overlay, predicted class and score, and summary tables. Runs must cover the same images.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--out", required=True, metavar="HTML")
    p.add_argument("--data", metavar="DIR", help="accepted for compatibility and not used: the grid shows the "
                   "model inputs the first run wrote under RUN/inputs")
    p.add_argument("--masks", metavar="DIR", help="ground-truth masks with the images' relative names")
    p.add_argument("--max-images", type=int, default=200, help="images shown in the grid")
    p.add_argument("--title", default="fastcam report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the report of the runs."""
    from fastcam.io.report import write_report

    path = write_report(args.runs, args.out, title=args.title, masks_dir=args.masks, max_images=args.max_images)
    print(f"fastcam report: {path}")
    return 0

"""`fastcam report`: one static HTML report over one or more run directories of the same images."""
from __future__ import annotations

import argparse

NAME = "report"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare `fastcam report` and its flags."""
    p = sub.add_parser(
        NAME,
        help="one HTML report over one or more run directories of the same images",
        description="Write a static HTML report that opens from disk (no network): summary tables, the overlays' "
        "colour bar and a sortable grid of images with each run's overlay, captioned with the label, the explained "
        "class and the predicted class with its probability; with the evaluation at the top once `fastcam eval` "
        "has scored the runs. Runs must cover the same images.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--out", required=True, metavar="HTML")
    p.add_argument("--data", metavar="DIR", help="accepted for compatibility and not used: the grid shows the "
                   "model inputs the first run wrote under RUN/inputs")
    p.add_argument("--masks", metavar="DIR", help="ground-truth masks with the images' relative names")
    p.add_argument("--labels", metavar="CSV", help="true labels (path,label[,class_name]) shown in the captions "
                   "(default: the first run's DATA/labels.csv if any)")
    p.add_argument("--class-names", metavar="NAMES", help="class names: comma-separated (healthy,lesion) or a file "
                   "(one per line, or a JSON list); default: the labels file's class_name column, else the indices")
    p.add_argument("--max-images", type=int, default=200, help="images shown in the grid: every image of a run of at "
                   "most this many, else the most and least confident predictions and a seeded random sample")
    p.add_argument("--ids", nargs="+", default=[], metavar="ID", help="sample ids always shown in the grid")
    p.add_argument("--title", default="fastcam report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the report of the runs."""
    from fastcam.evaluate import report_evaluation
    from fastcam.io.report import write_report
    from fastcam.io.run import open_run

    runs = [open_run(path) for path in args.runs]
    path = write_report(runs, args.out, title=args.title, masks_dir=args.masks, labels=args.labels,
                        class_names=args.class_names, max_images=args.max_images,
                        evaluation=report_evaluation(runs), show_ids=args.ids)
    print(f"fastcam report: {path}")
    return 0

"""`fastcam eval`: faithfulness, localisation and robustness metrics of stored runs, as tables and plots."""
from __future__ import annotations

import argparse

from fastcam.evaluate.catalog import GROUPS, METRICS

NAME = "eval"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare `fastcam eval` and its flags."""
    p = sub.add_parser(
        NAME,
        help="faithfulness, localisation and robustness metrics of stored runs: tables and plots",
        description="Compute deletion/insertion AUC, Average Drop / Increase in Confidence, pointing game, energy "
        "pointing game, activation precision/sensitivity (with --masks) and gradient-noise robustness for one or "
        "more run directories (a folder of runs works too). Writes RUN/eval/metrics.{md,json}, a combined table "
        "and plots (curves.png, metrics.png, robustness.png) with 95%% bootstrap intervals, and renders existing HTML "
        "reports again with the evaluation at the top and each image's scores beside its row.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--metrics", default="all", metavar="LIST",
                   help=f"comma-separated: {', '.join(METRICS)}, or the groups {', '.join(GROUPS)} (default all)")
    p.add_argument("--masks", metavar="DIR", help="ground-truth masks with the images' relative names (nonzero = region)")
    p.add_argument("--labels", metavar="CSV", help="true labels (path,label) for accuracy (default: DATA/labels.csv if any)")
    p.add_argument("--out", metavar="DIR", help="combined outputs (default: <the runs' common parent>/eval)")
    p.add_argument("--model", metavar="SPEC", help="model spec (default: the run's, when it names a fastcam or "
                   "torchvision model; a module:factory recorded in a run is only imported with --trust-run)")
    p.add_argument("--trust-run", action="store_true",
                   help="import and run the module:factory model spec recorded in the run directory (only for runs "
                   "you trust: it runs their code)")
    p.add_argument("--weights", metavar="FILE", help="model weights (default: the run's record)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=16, help="images per evaluation batch")
    p.add_argument("--forward-batch", type=int, default=256, metavar="N",
                   help="perturbed images per model forward (deletion/insertion; default 256)")
    p.add_argument("--steps", type=int, default=100, help="deletion/insertion steps")
    p.add_argument("--sigmas", default=None, help="gradient-noise sigmas (default 0.1,1,2,...,10)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads of torch (default: torch's own choice; 1 is fastest for small models on a busy "
                   "machine, see docs/metrics.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _sigmas(text: str) -> tuple[float, ...]:
    """--sigmas 0.1,1,5."""
    try:
        return tuple(float(s) for s in text.split(","))
    except ValueError:
        raise ValueError(f"--sigmas takes comma-separated numbers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    """Evaluate the runs, print the combined table."""
    import torch

    from fastcam.evaluate import evaluate, markdown_table, parse_metrics
    from fastcam.metrics import DEFAULT_SIGMAS

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive int, got {args.threads}")
        torch.set_num_threads(args.threads)
    results, out = evaluate(args.runs, args.metrics, masks=args.masks, out=args.out, spec=args.model,
                            weights=args.weights, device=args.device, batch_size=args.batch_size, steps=args.steps,
                            sigmas=_sigmas(args.sigmas) if args.sigmas else DEFAULT_SIGMAS, labels=args.labels,
                            progress=not args.quiet, seed=args.seed, trust_run=args.trust_run,
                            forward_batch_size=args.forward_batch)
    print(markdown_table(results, parse_metrics(args.metrics)))
    print(f"fastcam eval: {len(results)} run(s) -> {out}")
    return 0

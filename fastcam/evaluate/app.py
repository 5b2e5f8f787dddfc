"""`evaluate`: score run directories and write their tables, plots and report sections.

Outputs, per run: RUN/eval/metrics.json and metrics.md (and its plots); for all runs together (`out`,
default `<the runs' common parent>/eval`): metrics.json, metrics.md, curves.png (mean deletion /
insertion curves), metrics.png (bars per metric and method), robustness.png (SSIM / MSE vs sigma); and
each existing report.html of the runs or of their parents is rendered again with its "Evaluation"
section at the top (summary table, plots, each image's scores beside its row).

One progress bar counts the images of every run, with its ETA.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from fastcam._device import default_device, parse_device
from fastcam.evaluate.catalog import METRICS, parse_metrics
from fastcam.evaluate.inputs import check_trusted, find_runs, read_labels
from fastcam.evaluate.outputs import link_into_report, markdown_table, plot, report_evaluation
from fastcam.evaluate.scoring import RunMetrics, evaluate_run
from fastcam.io.report import render_again
from fastcam.io.run import RunDirectory, open_run
from fastcam.metrics.robustness import DEFAULT_SIGMAS


def evaluate(paths: str | Path | Sequence[str | Path], metrics: str | Sequence[str] = "all", *,
             masks: str | Path | None = None, out: str | Path | None = None, spec: str | None = None,
             weights: str | None = None, device: str | None = None, batch_size: int = 16, steps: int = 100,
             sigmas: Sequence[float] = DEFAULT_SIGMAS, labels: str | Path | None = None, progress: bool = True,
             seed: int = 0, trust_run: bool = False, forward_batch_size: int = 256) -> tuple[list[RunMetrics], Path]:
    """Evaluate runs, write per-run and combined tables and plots, link them into existing reports.

    Args:
        paths: run directories, or folders holding runs (`fastcam.evaluate.find_runs`).
        metrics: names or groups (`fastcam.evaluate.parse_metrics`), a comma-separated string or a sequence.
        masks: folder of ground-truth masks with the images' relative names (nonzero = region).
        out: the combined outputs' folder (default: `<the runs' common parent>/eval`).
        spec, weights: the model, when not the one the run recorded (its weights must hash to the run's).
        trust_run: build the model from a `module:callable` spec recorded in a run directory (that code is
            imported and run); without it such a run is refused (`fastcam.errors.UntrustedRunError`)
            unless `spec` names the model.
        labels: CSV of true labels for accuracy (default: the run's DATA/labels.csv when it exists).
        progress: one tqdm bar over the images of all runs (with its ETA).
        The others are `evaluate_run`'s.

    Returns (per-run results, the combined output folder).
    """
    from tqdm.auto import tqdm

    names = parse_metrics(metrics)
    run_dirs = find_runs([paths] if isinstance(paths, (str, os.PathLike)) else paths)
    if any(METRICS[m].needs_model for m in names):  # refused before anything is computed or written
        for run_dir in run_dirs:
            check_trusted(RunDirectory(run_dir).read_meta(), run_dir, spec, trust_run)
    device = str(parse_device(device)) if device else default_device()
    runs = [open_run(run_dir) for run_dir in run_dirs]
    results = []
    bar = tqdm(total=sum(len(run) for run in runs), desc="fastcam eval", unit="img", dynamic_ncols=True,
               disable=not progress)
    try:
        for run in runs:
            done = bar.n + len(run)
            label_map = None
            label_file = Path(labels) if labels else Path(run.meta.get("settings", {}).get("data", {}).get("root", "")) / "labels.csv"
            if label_file.is_file():
                label_map = read_labels(label_file)
            recorded = run.meta.get("settings", {}).get("model", {}).get("spec")
            result = evaluate_run(run, names, masks=masks, spec=spec or (recorded if trust_run else None),
                                  weights=weights, device=device, batch_size=batch_size, steps=steps, sigmas=sigmas,
                                  labels=label_map, progress=bar if progress else False, seed=seed,
                                  forward_batch_size=forward_batch_size)
            bar.update(done - bar.n)  # a run with nothing to score still counts as done
            results.append(result)
            _write_outputs([result], names, run.directory.eval, reports=[run.directory.report])
    finally:
        bar.close()
    common = Path(os.path.commonpath([str(p.resolve()) for p in run_dirs]))
    if len(run_dirs) == 1:
        common = common.parent
    combined = Path(out) if out else common / "eval"
    settings = {"metrics": list(names), "steps": steps, "sigmas": list(sigmas), "masks": str(masks) if masks else None,
                "device": str(device), "deletion_baseline": "zeros", "insertion_baseline": "blur (11x11, sigma 5)",
                "intervals": "95% percentile bootstrap of the mean, 1000 resamples"}
    _write_outputs(results, names, combined, reports=[RunDirectory(common).report, RunDirectory(common.parent).report],
                   settings=settings)
    return results, combined


def _write_outputs(results: Sequence[RunMetrics], names: Sequence[str], out: Path, reports: Sequence[Path],
                   settings: dict[str, Any] | None = None) -> None:
    """metrics.md, metrics.json and the plots under `out`; the Evaluation section in each existing report.

    A single run's metrics.json is its record; a combined one holds the settings and every run's record.
    A report that embeds its arguments is rendered again (its runs' records give the section); another
    gets the section inserted before </body>.
    """
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(results, names)
    (out / "metrics.md").write_text(table, encoding="utf-8")
    record = results[0].to_json() if settings is None else {"settings": settings, "runs": [r.to_json() for r in results]}
    (out / "metrics.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    images = plot(results, names, out)
    for report in dict.fromkeys(reports):  # the same file once, in order
        if report.is_file() and not render_again(report, lambda runs: report_evaluation(runs, names)):
            link_into_report(report, out, table, images)

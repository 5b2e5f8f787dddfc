"""`fastcam eval`: the metrics of `fastcam.metrics` for stored runs, as tables (Markdown, JSON) and plots.

An application of the library, beside `fastcam.demo` and `fastcam.benchmark`: `fastcam.metrics` stays
pure (tensors in, tensors out) and this package brings runs, models, images and masks to it.

- `catalog`: the metrics and their groups, the `--metrics` list;
- `inputs`: finding runs, rebuilding a run's model (weights checked against its hash) and images, masks,
  labels;
- `scoring`: `evaluate_run`, one run's metrics (`RunMetrics`);
- `outputs`: Markdown tables, plots, the "Evaluation" section of HTML reports;
- `app`: `evaluate`, runs in, every output written.
"""
from fastcam.evaluate.app import evaluate
from fastcam.evaluate.catalog import GROUPS, METRICS, MetricInfo, parse_metrics
from fastcam.evaluate.inputs import LogitsOnly, ModelMismatch, find_runs, load_mask, load_run_model, read_labels, run_images
from fastcam.evaluate.outputs import link_into_report, markdown_table, plot
from fastcam.evaluate.scoring import RunMetrics, evaluate_run

__all__ = [
    "GROUPS",
    "METRICS",
    "LogitsOnly",
    "MetricInfo",
    "ModelMismatch",
    "RunMetrics",
    "evaluate",
    "evaluate_run",
    "find_runs",
    "link_into_report",
    "load_mask",
    "load_run_model",
    "markdown_table",
    "parse_metrics",
    "plot",
    "read_labels",
    "run_images",
]

"""`fastcam eval`: the metrics of `fastcam.metrics` for stored runs, as tables (Markdown, JSON) and plots.

An application of the library, beside `fastcam.demo` and `fastcam.benchmark`: `fastcam.metrics` stays
pure (tensors in, tensors out) and this package brings runs, models, images and masks to it.

- `catalog`: the metrics and their groups, the `--metrics` list;
- `inputs`: finding runs, rebuilding a run's model (weights checked against its hash) and images, masks,
  labels;
- `scoring`: `evaluate_run`, one run's metrics (`RunMetrics`);
- `outputs`: Markdown tables, plots, the "Evaluation" section of HTML reports (`report_evaluation`);
- `stats`: bootstrap confidence intervals of the means;
- `app`: `evaluate`, runs in, every output written.

The names below load on first access, so `fastcam eval --help` reads the catalog without torch.
"""
from fastcam._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "evaluate": "fastcam.evaluate.app",
    "GROUPS": "fastcam.evaluate.catalog",
    "METRICS": "fastcam.evaluate.catalog",
    "MetricInfo": "fastcam.evaluate.catalog",
    "parse_metrics": "fastcam.evaluate.catalog",
    "LogitsOnly": "fastcam.evaluate.inputs",
    "ModelMismatch": "fastcam.evaluate.inputs",
    "find_runs": "fastcam.evaluate.inputs",
    "load_mask": "fastcam.evaluate.inputs",
    "load_run_model": "fastcam.evaluate.inputs",
    "read_labels": "fastcam.evaluate.inputs",
    "run_images": "fastcam.evaluate.inputs",
    "figures": "fastcam.evaluate.outputs",
    "link_into_report": "fastcam.evaluate.outputs",
    "markdown_table": "fastcam.evaluate.outputs",
    "plot": "fastcam.evaluate.outputs",
    "report_evaluation": "fastcam.evaluate.outputs",
    "bootstrap_mean_ci": "fastcam.evaluate.stats",
    "RunMetrics": "fastcam.evaluate.scoring",
    "evaluate_run": "fastcam.evaluate.scoring",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

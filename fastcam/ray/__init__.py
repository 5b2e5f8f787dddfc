"""fastcam on Ray Data (the optional extra `fastcam[ray]`): batch explanations on a Ray cluster.

- `BatchExplainer`: a callable class for `ray.data.Dataset.map_batches` (one model and explainer per actor)
  to put in one's own pipelines;
- `explain_dataset`: the whole `fastcam explain` job on Ray, into a run directory in fastcam's own store
  format (`fastcam.open_run`, `fastcam report`, `eval` and `verify` read it like a local run).

`import fastcam` never imports Ray; this package does. See docs/ray.md.
"""
from __future__ import annotations

try:
    import ray  # noqa: F401
    import ray.data  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("fastcam.ray needs Ray Data: pip install 'fastcam[ray]'") from exc

from fastcam.ray.engine import explain_dataset
from fastcam.ray.explainer import BatchExplainer

__all__ = ["BatchExplainer", "explain_dataset"]

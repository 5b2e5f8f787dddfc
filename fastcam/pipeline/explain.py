"""Explain whole datasets into resumable run directories: the public names of the three parts.

- `fastcam.pipeline.loop`: `explain_dataset`, the streamed, committed batch loop, and its named steps
  (`check_options`, `run_settings`, `create_or_resume`, `input_fingerprints`, `model_classes`,
  `explain_batch`) that the Ray engine (`fastcam.ray`) shares;
- `fastcam.pipeline.robust`: the robust call of one batch (out-of-memory halving, non-finite dropping);
- `fastcam.pipeline.folder`: `explain_folder`, a folder with a model built from a spec (`fastcam explain`), and
  `prepare_folder`, the model and preprocessing it builds.

`make_explainer` is kept for callers of earlier releases: the registry builds explainers
(`fastcam.methods.registry.get_method(name).build(...)`).
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from fastcam.methods.base import Explainer
from fastcam.methods.registry import get_method
from fastcam.pipeline.folder import PreparedFolder, RandomWeightsWarning, explain_folder, prepare_folder
from fastcam.pipeline.loop import (
    AMP_DTYPES,
    BatchResult,
    check_options,
    create_or_resume,
    explain_batch,
    explain_dataset,
    input_fingerprints,
    model_classes,
    run_settings,
    shard_skip_guard,
)
from fastcam.pipeline.robust import Explained, explain_finite, explain_splitting_on_oom

__all__ = ["AMP_DTYPES", "BatchResult", "Explained", "PreparedFolder", "RandomWeightsWarning", "check_options",
           "create_or_resume", "explain_batch", "explain_dataset", "explain_finite", "explain_folder",
           "explain_splitting_on_oom", "input_fingerprints", "make_explainer", "model_classes", "prepare_folder",
           "run_settings", "shard_skip_guard"]


def make_explainer(model: nn.Module, method: str, target_layer: nn.Module | str | None,
                   method_kwargs: Mapping[str, Any] | None = None) -> Explainer:
    """`get_method(method).build(model, target_layer, **method_kwargs)`: the explainer registered as `method`."""
    return get_method(method).build(model, target_layer, **dict(method_kwargs or {}))

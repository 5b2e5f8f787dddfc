"""Explain whole datasets into resumable run directories, and read them back.

- `explain`: `explain_dataset` (the streamed, committed batch loop) and `explain_folder` (a folder with a
  model built from a spec: what `fastcam explain` runs);
- `data`: datasets and their items, targets, model specs and weights;
- `settings`: the settings record of a run and the resume check;
- `distributed`: ranks and the process group under torchrun.

The run directory's layout belongs to `fastcam.io.run` (`RunDirectory`, `open_run`).
"""
from fastcam.io.run import Run, open_run
from fastcam.pipeline.data import load_model
from fastcam.pipeline.explain import explain_dataset, explain_folder, make_explainer

__all__ = ["Run", "explain_dataset", "explain_folder", "load_model", "make_explainer", "open_run"]

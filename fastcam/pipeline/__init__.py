"""Explain whole datasets into resumable run directories, and read them back.

- `loop`: `explain_dataset`, the streamed, committed batch loop over a dataset;
- `robust`: the robust call of one batch (out-of-memory halving, non-finite dropping);
- `folder`: `explain_folder`, a folder with a model built from a spec (what `fastcam explain` runs);
- `explain`: the public names of the three, and `make_explainer` (kept: the registry's `MethodInfo.build`);
- `data`: datasets and their items, targets, model specs and weights;
- `settings`: the settings record of a run and the resume check;
- `distributed`: ranks and the process group under torchrun.

The run directory's layout belongs to `fastcam.io.run` (`RunDirectory`, `open_run`).
"""
from fastcam.io.run import Run, open_run
from fastcam.pipeline.data import load_model
from fastcam.pipeline.explain import explain_dataset, explain_folder, make_explainer

__all__ = ["Run", "explain_dataset", "explain_folder", "load_model", "make_explainer", "open_run"]

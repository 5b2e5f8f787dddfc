"""Scoring one run: every requested metric of `fastcam.metrics` over its stored maps, batch by batch.

A run (`fastcam.open_run`) holds the low-resolution maps, logits and explained classes; the
faithfulness and robustness metrics also need the model and the images, which are rebuilt from the
run's record (`fastcam.evaluate.inputs`). Localisation metrics need ground-truth masks; images without
a mask file or with an empty mask (e.g. healthy images) are left out of those metrics and counted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from fastcam.evaluate.catalog import METRICS
from fastcam.evaluate.inputs import LogitsOnly, ModelMismatch, load_mask, load_run_model, run_images
from fastcam.io.store import Run
from fastcam.methods.registry import METHODS, display_name
from fastcam.metrics.faithfulness import average_drop_increase, deletion, insertion
from fastcam.metrics.localization import (
    activation_precision,
    activation_sensitivity,
    energy_pointing_game,
    pointing_game,
)
from fastcam.metrics.robustness import DEFAULT_SIGMAS, gradient_noise_robustness
from fastcam.pipeline import make_explainer


@dataclass
class RunMetrics:
    """The metrics of one run: per-image values (lists), mean curves, robustness per sigma."""

    name: str
    path: str
    method: str
    n: int
    values: dict[str, list[float]] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    robustness: dict[str, list[float]] = field(default_factory=dict)
    accuracy: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """How tables and plots name the run: the method's display name, with the run's own name when that
        is not just the method id (several runs of one method stay apart)."""
        shown = display_name(self.method)
        return shown if self.name == self.method else f"{self.name} ({shown})"

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean, standard deviation and count of each metric's per-image values."""
        out = {}
        for name, vals in self.values.items():
            a = np.asarray(vals, dtype=np.float64)
            out[name] = {"mean": float(a.mean()) if a.size else float("nan"),
                         "std": float(a.std()) if a.size else float("nan"), "n": int(a.size)}
        return out

    def to_json(self) -> dict[str, Any]:
        """The JSON record (method as its id)."""
        return {"name": self.name, "path": self.path, "method": self.method, "n": self.n, "accuracy": self.accuracy,
                "summary": self.summary(), "curves": self.curves, "robustness": self.robustness, "notes": self.notes,
                "per_image": self.values}


def _batches(n: int, size: int) -> Iterable[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def evaluate_run(run: Run, metrics: Sequence[str], *, masks: str | Path | None = None, model: nn.Module | None = None,
                 spec: str | None = None, weights: str | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 16, steps: int = 100, sigmas: Sequence[float] = DEFAULT_SIGMAS,
                 labels: dict[str, int] | None = None, progress: bool = True, seed: int = 0) -> RunMetrics:
    """Compute `metrics` (names of `METRICS`) for one run; see the module docstring."""
    from tqdm.auto import tqdm

    from fastcam.ops import upsample_normalize

    device = torch.device(device)
    res = RunMetrics(name=Path(run.path).name, path=str(run.path), method=run.method, n=len(run))
    if labels:
        known = [(i, labels[str(sid)]) for i, sid in enumerate(run.ids) if str(sid) in labels]
        if known:
            rows, truth = zip(*known)
            res.accuracy = float((run.predicted[list(rows)] == torch.tensor(truth)).float().mean())
    wanted = list(metrics)
    if masks is None and any(METRICS[m].needs_masks for m in wanted):
        res.notes.append("localisation metrics need --masks: skipped")
        wanted = [m for m in wanted if not METRICS[m].needs_masks]
    method = METHODS.get(run.method)
    if "robustness" in wanted and not (method is not None and method.needs_gradients):
        res.notes.append(f"robustness: {display_name(run.method)} uses no gradients, so gradient-noise robustness "
                         "is undefined")
        wanted.remove("robustness")
    need_model = any(METRICS[m].needs_model for m in wanted)
    dataset = None
    if need_model:
        try:
            dataset = run_images(run)
            if model is None:
                model = load_run_model(run, spec, weights)
        except ModelMismatch:
            raise
        except (ValueError, FileNotFoundError) as exc:  # images or model not recoverable: skip, say why
            res.notes.append(f"faithfulness/robustness skipped: {exc}")
            wanted = [m for m in wanted if not METRICS[m].needs_model]
            need_model = False
    if not wanted:
        return res
    size = tuple(int(s) for s in (run.meta.get("input_size") or (dataset.size if dataset is not None else ())))
    forward_model = None
    explainer = None
    if need_model:
        stale = [sid for r, sid in zip(run.indices.tolist(), run.ids) if r >= len(dataset) or dataset.ids[r] != sid]
        if stale:
            raise ValueError(f"the image folder of run {str(run.path)!r} changed since the run "
                             f"({len(stale)} samples differ, e.g. {stale[0]!r})")
        model = model.to(device).eval()
        # a self-explaining network (not post-hoc) returns (logits, evidence)
        forward_model = LogitsOnly(model) if method is not None and not method.post_hoc else model
        if "robustness" in wanted:
            settings = run.meta.get("settings", {})
            explainer = make_explainer(model, run.method, settings.get("target_layer"), settings.get("method_kwargs"))
    masks_dir = Path(masks) if masks is not None else None
    if masks_dir is not None and not masks_dir.is_dir():
        raise FileNotFoundError(f"masks folder {str(masks_dir)!r} does not exist")
    values: dict[str, list[float]] = {m: [] for m in wanted}
    sums: dict[str, Tensor] = {}
    robust_ssim, robust_mse = [], []
    no_mask = 0
    indices = run.indices.tolist()
    try:
        for rows in tqdm(list(_batches(len(run), batch_size)), desc=f"eval {res.name}", disable=not progress):
            lowres = run.lowres[rows.start:rows.stop].float()
            targets = run.targets[rows.start:rows.stop]
            if not size:
                raise ValueError(f"run {str(run.path)!r} does not record its input size")
            maps = upsample_normalize(lowres, size).to(device)
            if need_model:
                images = torch.stack([dataset[indices[r]]["image"] for r in rows]).to(device)
                targets = targets.to(device)
                for kind, fn in (("deletion", deletion), ("insertion", insertion)):
                    if kind in values:
                        curve = fn(forward_model, images, maps, targets, steps=steps, batch_size=max(64, batch_size))
                        values[kind] += curve.auc.tolist()
                        sums[kind] = sums.get(kind, 0) + curve.curve.double().sum(dim=0).cpu()
                if "average_drop" in values or "increase" in values:
                    di = average_drop_increase(forward_model, images, maps, targets)
                    if "average_drop" in values:
                        values["average_drop"] += di.drop.tolist()
                    if "increase" in values:
                        values["increase"] += (100.0 * di.increase).tolist()
                if explainer is not None:
                    rob = gradient_noise_robustness(explainer, images, targets, sigmas=sigmas, seed=seed + rows.start)
                    robust_ssim.append(rob.ssim.cpu())
                    robust_mse.append(rob.mse.cpu())
                    values["robustness"] += rob.ssim.mean(dim=0).tolist()
            if masks_dir is not None and any(METRICS[m].needs_masks for m in values):
                found = [(i, load_mask(masks_dir, run.ids[r])) for i, r in enumerate(rows)]
                keep = [(i, m) for i, m in found if m is not None and bool(m.any())]
                no_mask += len(found) - len(keep)
                if keep:
                    shapes = {tuple(m.shape) for _, m in keep}
                    if len(shapes) != 1:
                        raise ValueError(f"masks of one batch have different sizes {sorted(shapes)}")
                    sel = torch.tensor([i for i, _ in keep], device=device)
                    mask = torch.stack([m for _, m in keep]).to(device)
                    chosen = maps.index_select(0, sel)
                    for name, fn in (("pointing_game", pointing_game), ("energy_pointing_game", energy_pointing_game),
                                     ("precision", activation_precision), ("sensitivity", activation_sensitivity)):
                        if name in values:
                            values[name] += fn(chosen, mask).tolist()
    finally:
        close = getattr(explainer, "close", None)
        if callable(close):
            close()
    res.values = values
    for kind, total in sums.items():
        res.curves[kind] = (total / len(values[kind])).tolist()
    if robust_ssim:
        res.robustness = {"sigmas": [float(s) for s in sigmas],
                          "ssim": torch.cat(robust_ssim, dim=1).double().mean(dim=1).tolist(),
                          "mse": torch.cat(robust_mse, dim=1).double().mean(dim=1).tolist()}
    if masks_dir is not None and no_mask:
        res.notes.append(f"{no_mask} of {len(run)} images have no (or an empty) mask: left out of localisation")
    return res

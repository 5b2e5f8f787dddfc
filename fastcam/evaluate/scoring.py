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
from torch import nn

from fastcam.evaluate.catalog import METRICS
from fastcam.evaluate.inputs import LogitsOnly, ModelMismatch, load_mask, load_run_model, run_images
from fastcam.evaluate.stats import bootstrap_mean_ci
from fastcam.io.run import Run
from fastcam.methods.registry import METHODS, display_name
from fastcam.metrics.faithfulness import average_drop_increase, deletion, insertion
from fastcam.metrics.localization import (
    activation_precision,
    activation_sensitivity,
    energy_pointing_game,
    pointing_game,
)
from fastcam.metrics.robustness import DEFAULT_SIGMAS, gradient_noise_robustness


@dataclass
class RunMetrics:
    """The metrics of one run: per-image values (lists) and the sample ids they belong to, mean curves
    with their bootstrap intervals, robustness per sigma."""

    name: str
    path: str
    method: str
    n: int
    values: dict[str, list[float]] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    robustness: dict[str, list[float]] = field(default_factory=dict)
    accuracy: float | None = None
    notes: list[str] = field(default_factory=list)
    #: metric -> the sample id of each of its values (localisation leaves out images without a mask)
    ids: dict[str, list[Any]] = field(default_factory=dict)
    #: "deletion"/"insertion" -> [low, high] pointwise 95% bootstrap interval of the mean curve
    curves_ci: dict[str, list[list[float]]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How tables and plots name the run: the method's display name, with the run's own name when that
        is not just the method id (several runs of one method stay apart)."""
        shown = display_name(self.method)
        return shown if self.name == self.method else f"{self.name} ({shown})"

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean, standard deviation, count and 95% percentile-bootstrap interval of the mean
        (`ci_low`, `ci_high`; `fastcam.evaluate.stats`) of each metric's per-image values."""
        out = {}
        for name, vals in self.values.items():
            a = np.asarray(vals, dtype=np.float64)
            low, high = bootstrap_mean_ci(a)
            out[name] = {"mean": float(a.mean()) if a.size else float("nan"),
                         "std": float(a.std()) if a.size else float("nan"), "n": int(a.size),
                         "ci_low": float(low), "ci_high": float(high)}
        return out

    def per_image(self, metric: str) -> dict[Any, float]:
        """Sample id -> value of `metric` (records without ids: by row, when the metric covers every row)."""
        vals = self.values.get(metric) or []
        ids = self.ids.get(metric)
        if ids is None or len(ids) != len(vals):
            return {}
        return dict(zip(ids, vals))

    def to_json(self) -> dict[str, Any]:
        """The JSON record (method as its id)."""
        return {"name": self.name, "path": self.path, "method": self.method, "n": self.n, "accuracy": self.accuracy,
                "summary": self.summary(), "curves": self.curves, "curves_ci": self.curves_ci,
                "robustness": self.robustness, "notes": self.notes, "per_image": self.values,
                "per_image_ids": self.ids}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "RunMetrics":
        """Read back a `to_json` record (a run's eval/metrics.json); a malformed one raises ValueError."""
        try:
            return cls(name=str(record["name"]), path=str(record["path"]), method=str(record["method"]),
                       n=int(record["n"]),
                       values={str(k): [float(x) for x in v] for k, v in dict(record.get("per_image") or {}).items()},
                       curves={str(k): [float(x) for x in v] for k, v in dict(record.get("curves") or {}).items()},
                       robustness={str(k): [float(x) for x in v]
                                   for k, v in dict(record.get("robustness") or {}).items()},
                       accuracy=None if record.get("accuracy") is None else float(record["accuracy"]),
                       notes=[str(x) for x in record.get("notes") or []],
                       ids={str(k): list(v) for k, v in dict(record.get("per_image_ids") or {}).items()},
                       curves_ci={str(k): [[float(x) for x in band] for band in v]
                                  for k, v in dict(record.get("curves_ci") or {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a fastcam eval record: {exc}") from None


def _batches(n: int, size: int) -> Iterable[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def evaluate_run(run: Run, metrics: Sequence[str], *, masks: str | Path | None = None, model: nn.Module | None = None,
                 spec: str | None = None, weights: str | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 16, steps: int = 100, sigmas: Sequence[float] = DEFAULT_SIGMAS,
                 labels: dict[str, int] | None = None, progress: bool | Any = True, seed: int = 0,
                 forward_batch_size: int = 256) -> RunMetrics:
    """Compute `metrics` (names of `METRICS`) for one run; see the module docstring.

    `batch_size` images are scored at a time; their perturbed copies (deletion/insertion: images x
    (steps + 1)) run through the model in forwards of `forward_batch_size`. `progress` is True (a bar of
    this run's images, with its ETA), False, or a tqdm bar to advance by the images done (`evaluate`'s bar
    over every run).
    """
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
            assert method is not None  # robustness was kept only for a registered gradient method
            explainer = method.build(model, settings.get("target_layer"), **dict(settings.get("method_kwargs") or {}))
    masks_dir = Path(masks) if masks is not None else None
    if masks_dir is not None and not masks_dir.is_dir():
        raise FileNotFoundError(f"masks folder {str(masks_dir)!r} does not exist")
    values: dict[str, list[float]] = {m: [] for m in wanted}
    value_ids: dict[str, list[Any]] = {m: [] for m in wanted}
    curve_rows: dict[str, list[np.ndarray]] = {}
    robust_ssim, robust_mse = [], []
    no_mask = 0
    indices = run.indices.tolist()
    own_bar = progress is True
    bar = (tqdm(total=len(run), desc=f"eval {res.name}", unit="img", dynamic_ncols=True) if own_bar
           else progress if progress is not False and progress is not None else None)
    if bar is not None and not own_bar:
        bar.set_postfix_str(res.label, refresh=False)
    try:
        for rows in _batches(len(run), batch_size):
            lowres = run.lowres[rows.start:rows.stop].float()
            targets = run.targets[rows.start:rows.stop]
            batch_ids = [run.ids[r] for r in rows]
            if not size:
                raise ValueError(f"run {str(run.path)!r} does not record its input size")
            maps = upsample_normalize(lowres, size).to(device)
            if need_model:
                images = torch.stack([dataset[indices[r]]["image"] for r in rows]).to(device)
                targets = targets.to(device)
                for kind, fn in (("deletion", deletion), ("insertion", insertion)):
                    if kind in values:
                        curve = fn(forward_model, images, maps, targets, steps=steps, batch_size=forward_batch_size)
                        values[kind] += curve.auc.tolist()
                        value_ids[kind] += batch_ids
                        curve_rows.setdefault(kind, []).append(curve.curve.float().cpu().numpy())
                if "average_drop" in values or "increase" in values:
                    di = average_drop_increase(forward_model, images, maps, targets)
                    if "average_drop" in values:
                        values["average_drop"] += di.drop.tolist()
                        value_ids["average_drop"] += batch_ids
                    if "increase" in values:
                        values["increase"] += (100.0 * di.increase).tolist()
                        value_ids["increase"] += batch_ids
                if explainer is not None:
                    rob = gradient_noise_robustness(explainer, images, targets, sigmas=sigmas, seed=seed + rows.start)
                    robust_ssim.append(rob.ssim.cpu())
                    robust_mse.append(rob.mse.cpu())
                    values["robustness"] += rob.ssim.mean(dim=0).tolist()
                    value_ids["robustness"] += batch_ids
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
                            value_ids[name] += [batch_ids[i] for i, _ in keep]
            if bar is not None:
                bar.update(len(rows))
    finally:
        if own_bar and bar is not None:
            bar.close()
        close = getattr(explainer, "close", None)
        if callable(close):
            close()
    res.values = values
    res.ids = value_ids
    for kind, parts in curve_rows.items():
        per_image = np.concatenate(parts)                         # (n, steps + 1)
        res.curves[kind] = per_image.astype(np.float64).mean(axis=0).tolist()
        low, high = bootstrap_mean_ci(per_image, seed=seed)
        res.curves_ci[kind] = [low.tolist(), high.tolist()]
    if robust_ssim:
        res.robustness = {"sigmas": [float(s) for s in sigmas],
                          "ssim": torch.cat(robust_ssim, dim=1).double().mean(dim=1).tolist(),
                          "mse": torch.cat(robust_mse, dim=1).double().mean(dim=1).tolist()}
    if masks_dir is not None and no_mask:
        res.notes.append(f"{no_mask} of {len(run)} images have no (or an empty) mask: left out of localisation")
    return res

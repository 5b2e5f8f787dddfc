"""`fastcam eval`: the metrics of `fastcam.metrics` for stored runs, as tables (Markdown, JSON) and plots.

A run (`fastcam.open_run`) holds the low-resolution maps, logits and explained classes; the
faithfulness and robustness metrics also need the model and the images, which are rebuilt from the
run's record: the model spec and weights (`run.json` -> settings.model, or `--model/--weights`; the
weights must hash to the run's `state_sha256`, so a metric never scores another model) and the image
folder with its preprocessing. Localisation metrics need ground-truth masks: PNG (or any readable
image) files under `--masks DIR` with the images' relative names, nonzero = region; images without a
mask file or with an empty mask (e.g. healthy images) are left out of those metrics and counted.

Outputs, per run: RUN/eval/metrics.json and metrics.md; for all runs together (`--out`, default
`<the runs' common parent>/eval`): metrics.json, metrics.md, curves.png (mean deletion / insertion
curves), metrics.png (bars per metric and method), robustness.png (SSIM / MSE vs sigma); and an
"Evaluation" section (links and plots) in each existing report.html of the runs or of their parents.
"""
from __future__ import annotations

import html
import inspect
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from fastcam.metrics.faithfulness import average_drop_increase, deletion, insertion
from fastcam.metrics.localization import (
    activation_precision,
    activation_sensitivity,
    energy_pointing_game,
    pointing_game,
)
from fastcam.metrics.robustness import DEFAULT_SIGMAS, gradient_noise_robustness

#: metric name -> (column title, higher is better, needs model+images, needs masks)
METRICS: dict[str, tuple[str, bool, bool, bool]] = {
    "deletion": ("Deletion AUC ↓", False, True, False),
    "insertion": ("Insertion AUC ↑", True, True, False),
    "average_drop": ("Average Drop % ↓", False, True, False),
    "increase": ("Increase in Conf. % ↑", True, True, False),
    "pointing_game": ("Pointing game ↑", True, False, True),
    "energy_pointing_game": ("Energy PG ↑", True, False, True),
    "precision": ("Act. precision ↑", True, False, True),
    "sensitivity": ("Act. sensitivity ↑", True, False, True),
    "robustness": ("Robustness SSIM ↑ (mean over σ)", True, True, False),
}
GROUPS = {
    "faithfulness": ("deletion", "insertion", "average_drop", "increase"),
    "localization": ("pointing_game", "energy_pointing_game", "precision", "sensitivity"),
    "all": tuple(METRICS),
}
GRADIENT_METHODS = ("gradcam", "gradcampp", "cfcam")
EVAL_BEGIN, EVAL_END = "<!-- fastcam-eval -->", "<!-- /fastcam-eval -->"


def parse_metrics(text: str | Sequence[str]) -> tuple[str, ...]:
    """'deletion,insertion' / 'faithfulness' / 'all' -> metric names, in table order, validated."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    wanted: set[str] = set()
    for item in items:
        if item in GROUPS:
            wanted.update(GROUPS[item])
        elif item in METRICS:
            wanted.add(item)
        else:
            raise ValueError(f"unknown metric {item!r}; choose from {', '.join([*METRICS, *GROUPS])}")
    if not wanted:
        raise ValueError("no metric requested")
    return tuple(m for m in METRICS if m in wanted)


# ------------------------------------------------------------------------------------------ inputs
class ModelMismatch(ValueError):
    """The model given or recorded for a run is not the one the run explained (its weights differ)."""


class LogitsOnly(nn.Module):
    """A SoftCAM network returns (logits, evidence); the metrics need the logits only."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        out = self.net(images)
        return out[0] if isinstance(out, (tuple, list)) else out


def _weights_candidates(run_dir: Path, weights: str) -> list[Path]:
    p = Path(weights)
    if p.is_absolute():
        return [p]
    # relative names: to the working directory, the run, or a demo's OUT/model/ (run = OUT/runs/<method>)
    return [p, run_dir / p, run_dir.parent.parent / "model" / p, run_dir.parent / "model" / p]


def load_run_model(run: Any, spec: str | None = None, weights: str | None = None) -> nn.Module:
    """Rebuild the model a run explained, checking its weights hash to the run's `state_sha256`."""
    from fastcam.pipeline import load_model
    from fastcam.pipeline.settings import state_hash

    info = run.meta.get("settings", {}).get("model", {})
    spec = spec or info.get("spec")
    if not spec:
        raise ValueError(f"run {str(run.path)!r} does not record its model spec: pass --model (and --weights)")
    if weights is None and info.get("weights"):
        found = [p for p in _weights_candidates(Path(run.path), str(info["weights"])) if p.is_file()]
        if not found:
            raise ValueError(f"the run's weights {info['weights']!r} were not found: pass --weights")
        weights = str(found[0])
    softcam = run.method == "softcam"
    num_classes = int(run.logits.shape[1])
    channels = (run.meta.get("settings", {}).get("data", {}).get("preprocess") or {}).get("channels")
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_channels": channels}
    if ":" in spec:  # a user's factory gets only the keyword arguments it declares
        import importlib

        module, _, attr = spec.partition(":")
        factory = getattr(importlib.import_module(module), attr, None)
        try:
            params = inspect.signature(factory).parameters if callable(factory) else {}
        except (TypeError, ValueError):
            params = {}
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    if kwargs.get("in_channels") is None:
        kwargs.pop("in_channels", None)
    model, _ = load_model(spec, weights, kwargs.get("num_classes"), kwargs.get("in_channels"), softcam=softcam)
    expected = info.get("state_sha256")
    if expected and state_hash(model) != expected:
        raise ModelMismatch(f"the model built from {spec!r} (weights {weights!r}) is not the one run "
                         f"{str(run.path)!r} explained (state hash differs): pass the right --model/--weights")
    return model


def run_images(run: Any):  # noqa: ANN201 - (dataset, Preprocess)
    """The run's image folder with its preprocessing, as a `fastcam.io.images.ImageFolder`."""
    from fastcam.io.images import ImageFolder, Preprocess

    data = run.meta.get("settings", {}).get("data", {})
    if data.get("kind") != "folder":
        raise ValueError(f"run {str(run.path)!r} explained a {data.get('kind')!r} dataset, not a folder: its images "
                         "cannot be reloaded, so only the localisation metrics are available")
    pre = data.get("preprocess") or {}
    preprocess = Preprocess(channels=int(pre.get("channels", 3)), size=tuple(pre["size"]) if pre.get("size") else None,
                            mean=tuple(pre["mean"]) if pre.get("mean") else None,
                            std=tuple(pre["std"]) if pre.get("std") else None)
    root = Path(data["root"])
    if not root.is_dir():
        raise ValueError(f"the run's image folder {str(root)!r} does not exist any more")
    return ImageFolder(root, preprocess)


def load_mask(masks_dir: Path, sample_id: Any) -> Tensor | None:
    """(H, W) bool mask of a sample: MASKS/<id>, else MASKS/<id>.png or <stem>.png; None when absent."""
    from fastcam.io.images import read_image
    from fastcam.io.overlay import output_name

    name = str(sample_id)
    for candidate in (masks_dir / name, masks_dir / output_name(sample_id), (masks_dir / name).with_suffix(".png")):
        if candidate.is_file():
            return read_image(candidate).amax(dim=0) > 0
    return None


def read_labels(path: Path) -> dict[str, int]:
    """CSV of `relative/path,label` (a header line is allowed)."""
    import csv

    labels: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and row[1].strip().lstrip("-").isdigit():
                labels[row[0].strip()] = int(row[1])
    return labels


# ------------------------------------------------------------------------------------------ evaluation
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

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, vals in self.values.items():
            a = np.asarray(vals, dtype=np.float64)
            out[name] = {"mean": float(a.mean()) if a.size else float("nan"),
                         "std": float(a.std()) if a.size else float("nan"), "n": int(a.size)}
        return out

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "method": self.method, "n": self.n, "accuracy": self.accuracy,
                "summary": self.summary(), "curves": self.curves, "robustness": self.robustness, "notes": self.notes,
                "per_image": self.values}


def _batches(n: int, size: int) -> Iterable[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def evaluate_run(run: Any, metrics: Sequence[str], *, masks: str | Path | None = None, model: nn.Module | None = None,
                 spec: str | None = None, weights: str | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 16, steps: int = 100, sigmas: Sequence[float] = DEFAULT_SIGMAS,
                 labels: dict[str, int] | None = None, progress: bool = True, seed: int = 0) -> RunMetrics:
    """Compute `metrics` (names of `METRICS`) for one run; see the module docstring."""
    from tqdm.auto import tqdm

    from fastcam.methods._combine import upsample_normalize
    from fastcam.pipeline import make_explainer

    device = torch.device(device)
    res = RunMetrics(name=Path(run.path).name, path=str(run.path), method=run.method, n=len(run))
    if labels:
        known = [(i, labels[str(sid)]) for i, sid in enumerate(run.ids) if str(sid) in labels]
        if known:
            rows, truth = zip(*known)
            res.accuracy = float((run.predicted[list(rows)] == torch.tensor(truth)).float().mean())
    wanted = list(metrics)
    if masks is None and any(METRICS[m][3] for m in wanted):
        res.notes.append("localisation metrics need --masks: skipped")
        wanted = [m for m in wanted if not METRICS[m][3]]
    if "robustness" in wanted and run.method not in GRADIENT_METHODS:
        res.notes.append(f"robustness: {run.method} uses no gradients, so gradient-noise robustness is undefined")
        wanted.remove("robustness")
    need_model = any(METRICS[m][2] for m in wanted)
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
            wanted = [m for m in wanted if not METRICS[m][2]]
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
        forward_model = LogitsOnly(model) if run.method == "softcam" else model
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
            if masks_dir is not None and any(METRICS[m][3] for m in values):
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


# ------------------------------------------------------------------------------------------ outputs
def markdown_table(results: Sequence[RunMetrics], metrics: Sequence[str]) -> str:
    cols = [m for m in metrics if any(m in r.values and r.values[m] for r in results)]
    show_acc = any(r.accuracy is not None for r in results)
    head = ["run", "method", "images"] + (["accuracy"] if show_acc else []) + [METRICS[m][0] for m in cols]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|" + "---:|" * (len(head) - 3)]
    for r in results:
        s = r.summary()
        cells = [r.name, r.method, str(r.n)] + ([_f(r.accuracy, 3)] if show_acc else [])
        for m in cols:
            cells.append(f"{_f(s[m]['mean'], 3)} (n={s[m]['n']})" if m in s and s[m]["n"] else "—")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r.name}: {note}" for r in results for note in r.notes]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _f(x: float | None, digits: int) -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def plot(results: Sequence[RunMetrics], metrics: Sequence[str], out: Path) -> list[Path]:
    """curves.png, metrics.png, robustness.png (each only when it has data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    with_curves = [r for r in results if r.curves]
    if with_curves:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, kind in zip(axes, ("deletion", "insertion")):
            for r in with_curves:
                if kind in r.curves:
                    y = np.asarray(r.curves[kind])
                    auc = float(np.mean(r.values[kind]))
                    ax.plot(np.linspace(0, 1, len(y)), y, label=f"{r.name} (AUC {auc:.3f})")
            ax.set(title=f"{kind} (mean over images)", xlabel=f"fraction of pixels {'removed' if kind == 'deletion' else 'inserted'}",
                   ylabel="target probability", ylim=(0, 1.02))
            ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out / "curves.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    cols = [m for m in metrics if any(r.values.get(m) for r in results)]
    if cols:
        ncols = min(5, len(cols))
        nrows = -(-len(cols) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(2.8 * ncols, 3.2 * nrows), squeeze=False)
        for ax in axes.flat[len(cols):]:
            ax.set_visible(False)
        names = [r.name for r in results]
        for ax, m in zip(axes.flat, cols):
            means = [float(np.mean(r.values[m])) if r.values.get(m) else 0.0 for r in results]
            ax.bar(range(len(names)), means, color=[f"C{i}" for i in range(len(names))])
            ax.set_xticks(range(len(names)), names, rotation=60, fontsize=7)
            ax.set_title(METRICS[m][0], fontsize=8)
        fig.tight_layout()
        written.append(out / "metrics.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    robust = [r for r in results if r.robustness]
    if robust:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for r in robust:
            axes[0].plot(r.robustness["sigmas"], r.robustness["ssim"], marker="o", label=r.name)
            axes[1].plot(r.robustness["sigmas"], r.robustness["mse"], marker="o", label=r.name)
        axes[0].set(title="SSIM clean vs noisy-gradient map", xlabel="gradient noise σ", ylabel="SSIM")
        axes[1].set(title="MSE clean vs noisy-gradient map", xlabel="gradient noise σ", ylabel="MSE")
        for ax in axes:
            ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out / "robustness.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def link_into_report(report: Path, out: Path, table_md: str, images: Sequence[Path]) -> None:
    """Insert (or replace) an "Evaluation" section before </body> of an existing HTML report."""
    text = report.read_text(encoding="utf-8")
    base = report.parent

    def rel(p: Path) -> str:
        return html.escape(os.path.relpath(p, base).replace(os.sep, "/"))

    rows = [line for line in table_md.splitlines() if line.startswith("|") and not line.startswith("|---")]
    table = "".join("<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c.strip())}</{'th' if i == 0 else 'td'}>"
                                      for c in row.strip("|").split("|")) + "</tr>" for i, row in enumerate(rows))
    section = (f"{EVAL_BEGIN}<h2>Evaluation</h2><table>{table}</table>"
               f"<p><a href='{rel(out / 'metrics.md')}'>metrics.md</a> · <a href='{rel(out / 'metrics.json')}'>metrics.json</a></p>"
               + "".join(f"<p><img src='{rel(p)}' alt='{html.escape(p.stem)}' style='max-width:100%'></p>" for p in images)
               + EVAL_END)
    if EVAL_BEGIN in text:
        text = re.sub(re.escape(EVAL_BEGIN) + ".*?" + re.escape(EVAL_END), lambda _: section, text, flags=re.S)
    elif "</body>" in text:
        text = text.replace("</body>", section + "</body>", 1)
    else:
        text += section
    report.write_text(text, encoding="utf-8")


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories among `paths`; a folder that is not a run contributes its run subfolders."""
    from fastcam.io.store import RUN_JSON

    runs: list[Path] = []
    for p in map(Path, paths):
        if (p / RUN_JSON).is_file():
            runs.append(p)
        elif p.is_dir():
            subs = sorted(d for d in p.iterdir() if (d / RUN_JSON).is_file())
            subs += sorted(d for sub in p.iterdir() if sub.is_dir() and not (sub / RUN_JSON).is_file()
                           for d in sub.iterdir() if (d / RUN_JSON).is_file())
            if not subs:
                raise FileNotFoundError(f"{str(p)!r} is not a fastcam run directory and holds none")
            runs += subs
        else:
            raise FileNotFoundError(f"{str(p)!r} does not exist")
    return runs


def evaluate(paths: str | Path | Sequence[str | Path], metrics: str | Sequence[str] = "all", *, masks: str | Path | None = None,
             out: str | Path | None = None, spec: str | None = None, weights: str | None = None,
             device: str | None = None, batch_size: int = 16, steps: int = 100,
             sigmas: Sequence[float] = DEFAULT_SIGMAS, labels: str | Path | None = None, progress: bool = True,
             seed: int = 0) -> tuple[list[RunMetrics], Path]:
    """Evaluate runs, write per-run and combined tables and plots, link them into existing reports.

    Returns (per-run results, the combined output folder).
    """
    from fastcam.pipeline import open_run

    names = parse_metrics(metrics)
    run_dirs = find_runs([paths] if isinstance(paths, (str, os.PathLike)) else paths)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    for run_dir in run_dirs:
        run = open_run(run_dir)
        label_map = None
        label_file = Path(labels) if labels else Path(run.meta.get("settings", {}).get("data", {}).get("root", "")) / "labels.csv"
        if label_file.is_file():
            label_map = read_labels(label_file)
        result = evaluate_run(run, names, masks=masks, spec=spec, weights=weights, device=device,
                              batch_size=batch_size, steps=steps, sigmas=sigmas, labels=label_map,
                              progress=progress, seed=seed)
        results.append(result)
        run_out = run_dir / "eval"
        run_out.mkdir(exist_ok=True)
        table = markdown_table([result], names)
        (run_out / "metrics.md").write_text(table, encoding="utf-8")
        (run_out / "metrics.json").write_text(json.dumps(result.to_json(), indent=1) + "\n", encoding="utf-8")
        images = plot([result], names, run_out)
        if (run_dir / "report.html").is_file():
            link_into_report(run_dir / "report.html", run_out, table, images)
    common = Path(os.path.commonpath([str(p.resolve()) for p in run_dirs]))
    if len(run_dirs) == 1:
        common = common.parent
    combined = Path(out) if out else common / "eval"
    combined.mkdir(parents=True, exist_ok=True)
    table = markdown_table(results, names)
    settings = {"metrics": list(names), "steps": steps, "sigmas": list(sigmas), "masks": str(masks) if masks else None,
                "device": str(device), "deletion_baseline": "zeros", "insertion_baseline": "blur (11x11, sigma 5)"}
    (combined / "metrics.md").write_text(table, encoding="utf-8")
    (combined / "metrics.json").write_text(json.dumps({"settings": settings, "runs": [r.to_json() for r in results]},
                                                      indent=1) + "\n", encoding="utf-8")
    images = plot(results, names, combined)
    for report in {common / "report.html", common.parent / "report.html"}:
        if report.is_file():
            link_into_report(report, combined, table, images)
    return results, combined


def eval_cli(args: Any) -> int:
    """`fastcam eval RUN [RUN ...] --metrics ... [--masks DIR]`."""
    sigmas = tuple(float(s) for s in args.sigmas.split(",")) if args.sigmas else DEFAULT_SIGMAS
    results, out = evaluate(args.runs, args.metrics, masks=args.masks, out=args.out, spec=args.model,
                            weights=args.weights, device=args.device, batch_size=args.batch_size, steps=args.steps,
                            sigmas=sigmas, labels=args.labels, progress=not args.quiet, seed=args.seed)
    print(markdown_table(results, parse_metrics(args.metrics)))
    print(f"fastcam eval: {len(results)} run(s) -> {out}")
    return 0

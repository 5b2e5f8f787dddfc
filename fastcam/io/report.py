"""A static HTML report over one or more runs of the same images, rendered with Jinja2.

One HTML file that opens from disk with no server and no network (inline CSS and one small inline
script, no CDN). From the top:

- the evaluation, when `fastcam eval` has scored the runs (`ReportEvaluation`, built by
  `fastcam.evaluate.report_evaluation`): the summary table (mean, 95% bootstrap interval, n per metric
  and run) and the plots, embedded as PNG data;
- the runs (method by its display name, model, layer, images explained/skipped, time, device, accuracy
  when labels are known), the predicted-class distribution, the skipped files;
- the colour bar of the overlays (their colormap, from map value 0 to 1);
- the image grid, one row per image: the model input with its file name and label, the ground-truth
  mask when given, and each run's overlay captioned with the explained class and the predicted class
  with its probability, plus the image's scores (deletion, insertion, pointing game) once evaluated.
  A select box sorts the rows by label, a run's predicted probability or a per-image score.

Safety: the template engine escapes every value (autoescape), so nothing read from a run directory
(run.json, ids, file names, skipped-file errors) can inject markup or script; every image path is
URL-encoded (`%`, `#`, `?`, spaces, quotes, `<`, `&`, non-ASCII), relative to the report. Images are the
PNG files the runs wrote (`overlays/`, `inputs/`), so the report stays small for large datasets.

The page embeds its own arguments (`<script type="application/json" id="fastcam-report-config">`), so
`fastcam eval` can render it again with the evaluation (`render_again`).
"""
from __future__ import annotations

import base64
import csv
import json
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import quote

import numpy as np
import torch

from fastcam.io.overlay import colormap_stops, find_output, output_name, read_overlay_info
from fastcam.io.run import Run, open_run
from fastcam.methods.registry import display_name

CONFIG_ID = "fastcam-report-config"
CONFIG_VERSION = 1
#: per-image scores shown in the grid (when evaluated), with their short labels; the direction that
#: puts the best first is the sort default
ROW_METRICS: dict[str, tuple[str, str]] = {"deletion": ("del", "asc"), "insertion": ("ins", "desc"),
                                           "pointing_game": ("PG", "desc")}
#: the class table shows this many classes (the most predicted), the others summed
MAX_CLASS_COLUMNS = 30
#: the seed of the random rows of a large run's grid
SELECTION_SEED = 0
#: rows read per step while summarising a run (one pass, flat memory)
SUMMARY_STEP = 16384


@dataclass
class RunSummary:
    """One pass over a run's classes and logits (`summarise`): per sample, in the run's row order.

    Attributes:
        predicted: the predicted class.
        confidence: the softmax probability of the predicted class.
        score: the softmax probability of the explained class.
    """

    predicted: np.ndarray
    confidence: np.ndarray
    score: np.ndarray


def summarise(run: Run) -> RunSummary:
    """The predicted class and the two probabilities of every sample, read in steps (never the whole logits)."""
    n = len(run)
    out = RunSummary(np.zeros(n, np.int64), np.zeros(n, np.float32), np.zeros(n, np.float32))
    for start in range(0, n, SUMMARY_STEP):
        stop = min(start + SUMMARY_STEP, n)
        probs = torch.softmax(run.logits[start:stop], dim=1)
        predicted, targets = run.predicted[start:stop], run.targets[start:stop]
        out.predicted[start:stop] = predicted.numpy()
        out.confidence[start:stop] = probs.gather(1, predicted.clamp_min(0).view(-1, 1)).squeeze(1).numpy()
        out.score[start:stop] = probs.gather(1, targets.clamp_min(0).view(-1, 1)).squeeze(1).numpy()
    return out


def _rows_of(ids: Sequence[Any], wanted: Sequence[Any]) -> dict[Any, int]:
    """The rows of the `wanted` ids in `ids` (one pass; a wanted id may be given as text); ValueError naming
    those that are not there."""
    if not wanted:
        return {}
    as_text = {str(sid) for sid in wanted}
    found = {str(sid): row for row, sid in enumerate(ids) if str(sid) in as_text}
    rows = {sid: found.get(str(sid), -1) for sid in wanted}
    missing = [sid for sid, row in rows.items() if row < 0]
    if missing:
        raise ValueError(f"{len(missing)} listed id(s) are not explained samples of the run, e.g. {missing[0]!r}")
    return rows


def select_rows(summary: RunSummary, ids: Sequence[Any], limit: int, listed: Sequence[Any] = (),
                seed: int = SELECTION_SEED) -> tuple[list[int], str]:
    """The rows of the image grid: every row when there are at most `limit` (plus the `listed` ids), else
    the `listed` ids, then the most and the least confident predictions and a seeded random sample, a
    third of the rest each. Returns the rows and a sentence saying what they are."""
    n = len(ids)
    chosen = list(dict.fromkeys(_rows_of(ids, listed).values()))
    if n <= limit:
        return list(dict.fromkeys([*chosen, *range(n)])), "every image"
    k = max(limit - len(chosen), 0) // 3
    order = np.argsort(summary.confidence, kind="stable")
    most, least = order[::-1][:k].tolist(), order[:k].tolist()
    taken = set(chosen) | set(most) | set(least)
    pool = np.setdiff1d(np.arange(n), np.fromiter(taken, np.int64, len(taken)), assume_unique=True)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(pool, size=min(k, len(pool)), replace=False)).tolist()
    rows = list(dict.fromkeys([*chosen, *most, *least, *sample]))
    parts = ([f"the {len(chosen)} listed"] if chosen else []) + [
        f"the {len(most)} most and {len(least)} least confident predictions",
        f"{len(sample)} chosen at random (seed {seed})"]
    return rows, f"a selection of {n} images: " + ", ".join(parts)


@dataclass
class ReportEvaluation:
    """What `fastcam eval` adds to a report (plain data: the report does not compute metrics).

    Attributes:
        header, rows: the summary table, one row per run; a cell is a string or {"mean", "ci", "n"}.
        notes: lines under the table (what the interval is, skipped metrics).
        plots: (caption, PNG bytes) of each plot, embedded in the page.
        per_image: run directory (resolved, as str) -> sample id (as str) -> metric -> value.
        titles: metric -> its column title ("Deletion AUC ↓").
        links: (text, file) of the evaluation's own files (metrics.md, metrics.json).
    """

    header: list[str]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)
    plots: list[tuple[str, bytes]] = field(default_factory=list)
    per_image: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    links: list[tuple[str, Path]] = field(default_factory=list)


def url(path: str | os.PathLike[str], start: str | os.PathLike[str]) -> str:
    """`path` relative to the folder `start`, as a URL path: POSIX separators, every other reserved or
    non-ASCII character percent-encoded (UTF-8), so "pct%41.png" stays itself and "#", "?" cannot cut it."""
    rel = Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()
    return quote(rel, safe="/")


def sample_pngs(folder: Path, sample_id: Any) -> list[Path]:
    """The PNGs a grid cell shows for one sample from a run's `inputs/` or `overlays/` folder.

    One file for a 2-D image. Hook for 3-D volumes: return the central slices' PNGs here (e.g. axial,
    coronal, sagittal), the template shows every path of a cell side by side.
    """
    found = find_output(folder, sample_id)
    return [found] if found is not None else []


def find_mask(masks_dir: Path, sample_id: Any) -> Path | None:
    """A sample's mask file: MASKS/<id>, else MASKS/<id>.png, else MASKS/<id with .png as suffix>."""
    name = str(sample_id)
    for candidate in (masks_dir / name, masks_dir / output_name(sample_id), (masks_dir / name).with_suffix(".png")):
        if candidate.is_file():
            return candidate
    return None


# ------------------------------------------------------------------------------------------- labels
def read_labels(path: str | os.PathLike[str]) -> dict[str, int]:
    """CSV of `relative/path,label` (a header line and a UTF-8 BOM are allowed; rows whose label is not
    an integer are ignored)."""
    return read_labels_and_names(path)[0]


def read_labels_and_names(path: str | os.PathLike[str]) -> tuple[dict[str, int], dict[int, str]]:
    """(labels by id, class names by index) of a labels CSV: `path,label` rows, and optionally a third
    column of class names (`path,label,class_name`), which names the classes."""
    labels: dict[str, int] = {}
    names: dict[int, str] = {}
    with Path(path).open(newline="", encoding="utf-8-sig") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and re.fullmatch(r"-?\d+", row[1].strip()):
                labels[row[0].strip()] = int(row[1])
                if len(row) >= 3 and row[2].strip():
                    names.setdefault(int(row[1]), row[2].strip())
    return labels, names


def parse_class_names(value: str | os.PathLike[str] | Sequence[str] | Mapping[int, str] | None) -> dict[int, str]:
    """Class names by index from: a sequence or mapping, a file (one name per line, or a JSON list or
    object), or a comma-separated string ("healthy,lesion")."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {int(k): str(v) for k, v in value.items()}
    if isinstance(value, (str, os.PathLike)) and Path(value).is_file():
        text = Path(value).read_text(encoding="utf-8-sig")
        try:
            data = json.loads(text)
        except ValueError:
            return {i: line.strip() for i, line in enumerate(text.splitlines()) if line.strip()}
        return parse_class_names(data if isinstance(data, (list, dict)) else str(data))
    if isinstance(value, str):
        return {i: name.strip() for i, name in enumerate(value.split(","))}
    return {i: str(name) for i, name in enumerate(value)}


def model_class_names(run: Run) -> list[str] | None:
    """The class names the run's model gave (`settings.model.class_names` in run.json: a Hugging Face
    config's `id2label`), or None."""
    names = run.meta.get("settings", {}).get("model", {}).get("class_names")
    return [str(n) for n in names] if isinstance(names, list) else None


def _default_labels_file(run: Run) -> Path | None:
    """The run's DATA/labels.csv, when the run explained a folder that has one."""
    data = run.meta.get("settings", {}).get("data", {})
    root = data.get("root") if isinstance(data, dict) else None
    if isinstance(root, str) and root:
        candidate = Path(root) / "labels.csv"
        if candidate.is_file():
            return candidate
    return None


# ------------------------------------------------------------------------------------------- render
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("fastcam.io", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def _text(value: Any) -> str:
    """A run.json value as text: lists joined, None empty."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _number(value: Any) -> str:
    return "" if value is None or value == "" else _text(value)


def write_report(runs: Sequence[Run | str | os.PathLike[str]], out: str | Path, title: str = "fastcam report",
                 masks_dir: str | Path | None = None,
                 labels: Mapping[Any, int] | str | os.PathLike[str] | None = None,
                 class_names: Sequence[str] | Mapping[int, str] | str | os.PathLike[str] | None = None,
                 max_images: int = 200, evaluation: ReportEvaluation | None = None,
                 show_ids: Sequence[Any] = ()) -> Path:
    """Write the HTML report of `runs` (which must explain the same sample ids) to `out`.

    The page summarises every sample (class counts, the distribution of the explained class's
    probability) in one streamed pass; its image grid shows every image of a run of at most `max_images`,
    else a selection it names (`select_rows`: the `show_ids`, the most and least confident predictions
    of the first run, a seeded random sample), so a million-sample run gives a page that opens at once.

    Runs are `Run`s or run directories (opened with `open_run`). `labels`: a mapping id -> class or a
    labels CSV (default: the first run's DATA/labels.csv when it exists); `class_names`: see
    `parse_class_names` (default: the labels CSV's class-name column, if any, else the
    model's own, `model_class_names`). `evaluation`: the
    evaluation section (`fastcam.evaluate.report_evaluation`). Methods are shown by their display names.
    """
    if not runs:
        raise ValueError("write_report needs at least one run")
    if not isinstance(max_images, int) or max_images < 0:
        raise ValueError(f"max_images must be a non-negative int, got {max_images!r}")
    opened = [run if isinstance(run, Run) else open_run(run) for run in runs]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.parent
    ids = opened[0].ids
    for run in opened[1:]:
        if set(run.ids) != set(ids):
            raise ValueError(f"runs {str(opened[0].path)!r} and {str(run.path)!r} explain different samples")

    labels_file = None
    if labels is None:
        labels_file = _default_labels_file(opened[0])
    elif isinstance(labels, (str, os.PathLike)):
        labels_file = Path(labels)
    label_map: dict[str, int] = {}
    names: dict[int, str] = {}
    if labels_file is not None:
        label_map, names = read_labels_and_names(labels_file)
    elif labels is not None:
        label_map = {str(k): int(v) for k, v in labels.items()}  # type: ignore[union-attr]
    # the user's names, else the labels CSV's, else the model's own (a Hugging Face config's id2label)
    names = parse_class_names(class_names) or names or parse_class_names(model_class_names(opened[0]))

    def name(c: int | None) -> str:
        return "" if c is None else names.get(int(c), str(int(c)))

    def label_of(sid: Any) -> int | None:
        return label_map.get(str(sid)) if label_map else None

    summaries = [summarise(run) for run in opened]
    context = {
        "title": title,
        "runs": _run_rows(opened, summaries, label_of if label_map else None),
        "classes": _class_table(opened, summaries, name),
        "skipped": sorted({(str(s.get("id")), _text(s.get("error"))) for run in opened for s in run.skipped
                           if isinstance(s, dict)}),
        "colorbars": _colorbars(opened),
        "evaluation": _evaluation_context(evaluation, base) if evaluation is not None else None,
        "has_labels": bool(label_map), "has_masks": masks_dir is not None,
        "config_id": CONFIG_ID,
        "config": _config(opened, base, title, masks_dir, labels_file, labels, names, max_images, show_ids),
    }
    rows, context["selection"] = select_rows(summaries[0], ids, max_images, show_ids)
    shown = [ids[i] for i in rows]
    context["n_shown"], context["n_total"] = len(shown), len(ids)
    context["sort_keys"], context["rows"] = _grid(opened, shown, rows, base, masks_dir, label_of, name, evaluation)
    import fastcam

    context["version"] = fastcam.__version__
    html = _environment().get_template("report.html.j2").render(**context)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out


def _run_rows(opened: Sequence[Run], summaries: Sequence[RunSummary], label_of: Any) -> list[dict[str, str]]:
    rows = []
    for run, summary in zip(opened, summaries):
        meta = run.meta
        settings = meta.get("settings", {}) if isinstance(meta.get("settings"), dict) else {}
        timings = meta.get("timings", {}) if isinstance(meta.get("timings"), dict) else {}
        model = settings.get("model", {}) if isinstance(settings.get("model"), dict) else {}
        accuracy = ""
        known = [(p, label_of(s)) for p, s in zip(summary.predicted.tolist(), run.ids)
                 if label_of(s) is not None] if label_of is not None else []  # labelled runs only
        if known:
            accuracy = f"{sum(p == y for p, y in known) / len(known):.3f}"
        rows.append({
            "method": display_name(run.method), "name": Path(run.path).name,
            "model": _text(model.get("spec") or model.get("class")),
            "layer": _text(settings.get("target_layer") or "evidence maps (SoftCAM head)"),
            "explained": str(len(run)), "skipped": str(len(run.skipped)),
            "seconds": _number(timings.get("seconds")), "images_per_s": _number(timings.get("images_per_s")),
            "device": _text(meta.get("device")), "accuracy": accuracy,
        })
    return rows


def _class_table(opened: Sequence[Run], summaries: Sequence[RunSummary], name: Any) -> dict[str, Any]:
    """Predicted-class counts (the most predicted classes, the others summed) and the distribution of the
    explained class's probability, per run."""
    counts = [Counter(dict(zip(*(v.tolist() for v in np.unique(s.predicted, return_counts=True))))) for s in summaries]
    total = sum(counts, Counter())
    classes = sorted(c for c, _ in total.most_common(MAX_CLASS_COLUMNS))
    others = len(total) > len(classes)
    edges = np.linspace(0.0, 1.0, 11)
    rows = []
    for run, summary, count in zip(opened, summaries, counts):
        mean_score = float(summary.score.mean()) if len(run) else float("nan")
        shown = [count.get(c, 0) for c in classes]
        rows.append({"method": display_name(run.method), "counts": shown + ([len(run) - sum(shown)] if others else []),
                     "mean_score": f"{mean_score:.3f}",
                     "histogram": np.histogram(summary.score, bins=edges)[0].tolist()})
    return {"names": [name(c) for c in classes] + ([f"{len(total) - len(classes)} other classes"] if others else []),
            "rows": rows, "bins": [f"{a:.1f}-{b:.1f}" for a, b in zip(edges[:-1], edges[1:])]}


def _colorbars(opened: Sequence[Run]) -> list[dict[str, Any]]:
    """One colour bar per distinct overlay colormap among the runs (usually one)."""
    bars: dict[tuple[str, float], list[str]] = {}
    for run in opened:
        info = read_overlay_info(run.directory.overlays)
        bars.setdefault((info["colormap"], info["alpha"]), []).append(display_name(run.method))
    out = []
    for (cmap, alpha), methods in bars.items():
        try:
            stops = colormap_stops(cmap)
        except ValueError:
            cmap, stops = f"{cmap} (unknown colormap; jet shown)", colormap_stops("jet")
        out.append({"colormap": cmap, "alpha": f"{alpha:g}", "stops": stops, "methods": methods})
    return out


def _evaluation_context(evaluation: ReportEvaluation, base: Path) -> dict[str, Any]:
    return {
        "header": evaluation.header, "rows": evaluation.rows, "notes": evaluation.notes,
        "plots": [{"caption": caption, "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}
                  for caption, png in evaluation.plots],
        "links": [{"text": text, "href": url(path, base)} for text, path in evaluation.links if Path(path).exists()],
    }


def _grid(opened: Sequence[Run], shown: Sequence[Any], shown_rows: Sequence[int], base: Path, masks_dir: str | Path | None, label_of: Any,
          name: Any, evaluation: ReportEvaluation | None) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """The sort keys (select options) and the rows of the image grid."""
    rows_of = [dict(zip(shown, shown_rows)) if run.ids == opened[0].ids else _rows_of(run.ids, shown) for run in opened]
    scores = [(evaluation.per_image.get(str(Path(run.path).resolve()), {}) if evaluation else {}) for run in opened]
    row_metrics = [m for m in ROW_METRICS if any(m in v for s in scores for v in s.values())]
    multi = len(opened) > 1
    sort_keys = [{"key": "", "text": "dataset order", "dir": "asc"}]
    if any(label_of(sid) is not None for sid in shown):
        sort_keys.append({"key": "label", "text": "label", "dir": "asc"})
    for j, run in enumerate(opened):
        who = display_name(run.method) + (f" ({Path(run.path).name})" if multi and sum(
            r.method == run.method for r in opened) > 1 else "")
        sort_keys.append({"key": f"p{j}", "text": f"{who}: predicted probability", "dir": "desc"})
        for m in row_metrics:
            if any(m in v for v in scores[j].values()):
                title = evaluation.titles.get(m, m) if evaluation else m
                sort_keys.append({"key": f"m{j}-{m}", "text": f"{who}: {title}", "dir": ROW_METRICS[m][1]})
    rows = []
    for sid in shown:
        label = label_of(sid)
        keys: dict[str, str] = {}
        if label is not None:
            keys["label"] = str(label)
        mask = find_mask(Path(masks_dir), sid) if masks_dir is not None else None
        row: dict[str, Any] = {
            "id": str(sid), "label": name(label) if label is not None else None,
            "input": [url(p, base) for p in sample_pngs(opened[0].directory.inputs, sid)],
            "mask": [url(mask, base)] if mask is not None else [],
        }
        cells = []
        for j, run in enumerate(opened):
            sample = run.sample(rows_of[j][sid])  # this row's chunks only
            predicted, explained = sample.predicted, sample.target
            probs = torch.softmax(sample.logits, dim=0)
            prob = float(probs[predicted]) if 0 <= predicted < probs.shape[0] else float("nan")
            keys[f"p{j}"] = f"{prob:.6g}"
            cell_scores = []
            values = scores[j].get(str(sid), {})
            for m in row_metrics:
                if m in values:
                    keys[f"m{j}-{m}"] = f"{values[m]:.6g}"
                    short = ROW_METRICS[m][0]
                    text = f"{values[m]:.0f}" if m == "pointing_game" else f"{values[m]:.3f}"
                    cell_scores.append({"short": short, "title": evaluation.titles.get(m, m) if evaluation else m,
                                        "text": text, "metric": m})
            cells.append({
                "method": display_name(run.method),
                "images": [url(p, base) for p in sample_pngs(run.directory.overlays, sid)],
                "explained": name(explained), "predicted": name(predicted), "prob": f"{prob:.2f}",
                "wrong": label is not None and predicted != label, "scores": cell_scores,
            })
        row["cells"], row["sort"] = cells, keys
        rows.append(row)
    return sort_keys, rows


# ------------------------------------------------------------------------------------------- config
def _portable(path: str | os.PathLike[str] | None, base: Path) -> str | None:
    """A path as written into the page: relative to the report's folder (the tree can move)."""
    if path is None:
        return None
    try:
        return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()
    except ValueError:  # another drive
        return str(Path(path).resolve())


def _config(opened: Sequence[Run], base: Path, title: str, masks_dir: Any, labels_file: Path | None, labels: Any,
            names: dict[int, str], max_images: int, show_ids: Sequence[Any]) -> dict[str, Any]:
    mapping = None
    if labels_file is None and labels is not None:
        mapping = [[k, int(v)] for k, v in labels.items()]
    return {"version": CONFIG_VERSION, "runs": [_portable(run.path, base) for run in opened], "title": title,
            "masks_dir": _portable(masks_dir, base), "labels_file": _portable(labels_file, base),
            "labels": mapping, "class_names": [[k, v] for k, v in sorted(names.items())], "max_images": max_images,
            "show_ids": list(show_ids)}


def read_config(report: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The arguments a report was written with (paths resolved), or None for a page without them
    (not written by this version, or not a fastcam report)."""
    report = Path(report)
    try:
        text = report.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    found = re.search(r'<script type="application/json" id="' + CONFIG_ID + r'">(.*?)</script>', text, flags=re.S)
    if not found:
        return None
    try:
        config = json.loads(found.group(1))
    except ValueError:
        return None
    if not isinstance(config, dict) or config.get("version") != CONFIG_VERSION:
        return None
    base = report.parent

    def resolve(p: Any) -> Path | None:
        return None if p is None else base / str(p)

    try:
        labels: Any = resolve(config.get("labels_file"))
        if labels is None and config.get("labels") is not None:
            labels = {k: int(v) for k, v in config["labels"]}
        return {"runs": [resolve(p) for p in config["runs"]], "title": str(config.get("title", "fastcam report")),
                "masks_dir": resolve(config.get("masks_dir")), "labels": labels,
                "class_names": {int(k): str(v) for k, v in config.get("class_names") or []},
                "max_images": int(config.get("max_images", 200)), "show_ids": list(config.get("show_ids") or [])}
    except (KeyError, TypeError, ValueError):
        return None


def render_again(report: str | os.PathLike[str], evaluation: Any = None) -> bool:
    """Write `report` again from the arguments it embeds, with `evaluation` (a `ReportEvaluation`, or a
    callable taking the opened runs and returning one). False when the page embeds no arguments or its
    runs cannot be opened any more."""
    config = read_config(report)
    if config is None:
        return False
    try:
        runs = [open_run(p) for p in config.pop("runs")]
    except (OSError, ValueError) as exc:  # a run moved or was deleted since: the page cannot be rebuilt
        warnings.warn(f"{str(report)!r} cannot be rendered again ({exc}); its evaluation section is inserted "
                      "instead", stacklevel=2)
        return False
    section = evaluation(runs) if callable(evaluation) else evaluation
    write_report(runs, report, evaluation=section, **config)
    return True


__all__ = ["ReportEvaluation", "RunSummary", "find_mask", "parse_class_names", "read_config", "read_labels",
           "read_labels_and_names", "render_again", "sample_pngs", "select_rows", "summarise", "url",
           "write_report"]

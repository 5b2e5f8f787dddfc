"""A self-contained static HTML report over one or more runs of the same images.

One HTML file with inline CSS and no script, server or network access: summary tables (per run: method,
model, layer, images explained/skipped, speed, device; the predicted-class distribution; accuracy when
labels are known) and a grid with one row per image: the model input, the ground-truth mask when given,
and each run's overlay captioned with the predicted class and its softmax score. Images are the PNG
files the runs wrote (`inputs/`, `overlays/`), linked by paths relative to the report, so the report
opens from disk and stays small for large datasets.
"""
from __future__ import annotations

import html
import os
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from fastcam.io.overlay import output_name
from fastcam.io.store import Run, open_run
from fastcam.methods.registry import display_name

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.9em}
th{background:#f3f3f3}
.grid td{vertical-align:top;text-align:center}
.grid img{width:128px;height:128px;object-fit:contain;image-rendering:pixelated;display:block;margin:auto}
.cap{font-size:.75em;color:#555}
.wrong{color:#b00}
"""


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def _img(path: Path, start: Path, alt: str) -> str:
    if not path.is_file():
        return '<span class="cap">(no image)</span>'
    return f'<img src="{html.escape(_rel(path, start))}" alt="{html.escape(alt)}" loading="lazy">'


def write_report(runs: Sequence[Run | str | os.PathLike[str]], out: str | Path, title: str = "fastcam report",
                 masks_dir: str | Path | None = None, labels: Mapping[Any, int] | None = None,
                 class_names: Sequence[str] | None = None, max_images: int = 200) -> Path:
    """Write the HTML report of `runs` (which must explain the same sample ids) to `out`.

    Runs are `Run`s or run directories (opened with `open_run`). Methods are shown by their display
    names ("Grad-CAM++").
    """
    if not runs:
        raise ValueError("write_report needs at least one run")
    opened = [run if isinstance(run, Run) else open_run(run) for run in runs]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.parent
    ids = opened[0].ids
    for run in opened[1:]:
        if set(run.ids) != set(ids):
            raise ValueError(f"runs {str(opened[0].path)!r} and {str(run.path)!r} explain different samples")
    rows = {run.path: {sid: i for i, sid in enumerate(run.ids)} for run in opened}

    def name(c: int) -> str:
        return class_names[c] if class_names and 0 <= c < len(class_names) else str(c)

    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    # --- summary table
    parts.append("<h2>Runs</h2><table><tr><th>method</th><th>model</th><th>layer</th><th>explained</th>"
                 "<th>skipped</th><th>seconds</th><th>images/s</th><th>device</th>"
                 + ("<th>accuracy</th>" if labels else "") + "</tr>")
    for run in opened:
        meta, settings = run.meta, run.meta.get("settings", {})
        timings = meta.get("timings", {})
        model = settings.get("model", {})
        acc = ""
        if labels:
            known = [(p, labels[s]) for p, s in zip(run.predicted.tolist(), run.ids) if s in labels]
            acc = f"<td>{sum(p == y for p, y in known) / max(len(known), 1):.3f}</td>"
        parts.append(
            f"<tr><td>{html.escape(display_name(run.method))}</td>"
            f"<td>{html.escape(str(model.get('spec') or model.get('class')))}</td>"
            f"<td>{html.escape(str(settings.get('target_layer') or 'evidence maps (SoftCAM head)'))}</td><td>{len(run)}</td><td>{len(run.skipped)}</td>"
            f"<td>{timings.get('seconds', '')}</td><td>{timings.get('images_per_s', '')}</td>"
            f"<td>{html.escape(', '.join(meta.get('device', [])))}</td>{acc}</tr>")
    parts.append("</table>")
    # --- predicted-class distribution
    classes = sorted({c for run in opened for c in run.predicted.tolist()})
    parts.append("<h2>Predicted classes</h2><table><tr><th>method</th>"
                 + "".join(f"<th>{html.escape(name(c))}</th>" for c in classes) + "<th>mean score</th></tr>")
    for run in opened:
        counts = Counter(run.predicted.tolist())
        mean_score = float(run.scores.mean()) if len(run) else float("nan")
        parts.append(f"<tr><td>{html.escape(display_name(run.method))}</td>"
                     + "".join(f"<td>{counts.get(c, 0)}</td>" for c in classes)
                     + f"<td>{mean_score:.3f}</td></tr>")
    parts.append("</table>")
    skipped = {s["id"]: s["error"] for run in opened for s in run.skipped}
    if skipped:
        parts.append("<h2>Skipped files</h2><table><tr><th>file</th><th>error</th></tr>"
                     + "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(v)}</td></tr>"
                               for k, v in sorted(skipped.items(), key=lambda kv: str(kv[0])))
                     + "</table>")
    # --- image grid
    shown = ids[:max_images]
    parts.append(f"<h2>Images ({len(shown)} of {len(ids)})</h2><table class='grid'><tr><th>image</th>"
                 + ("<th>mask</th>" if masks_dir else "")
                 + "".join(f"<th>{html.escape(display_name(run.method))}</th>" for run in opened) + "</tr>")
    for sid in shown:
        label = labels.get(sid) if labels else None
        cap = html.escape(str(sid)) + (f"<br>label {html.escape(name(label))}" if label is not None else "")
        cells = [f"<td>{_img(opened[0].directory.inputs / output_name(sid), base, str(sid))}"
                 f"<div class='cap'>{cap}</div></td>"]
        if masks_dir:
            cells.append(f"<td>{_img(Path(masks_dir) / output_name(sid), base, 'mask')}</td>")
        for run in opened:
            i = rows[run.path][sid]
            pred, score = int(run.predicted[i]), float(torch.softmax(run.logits[i], 0).max())
            wrong = " wrong" if label is not None and pred != label else ""
            cells.append(f"<td>{_img(run.directory.overlays / output_name(sid), base, display_name(run.method))}"
                         f"<div class='cap{wrong}'>pred {html.escape(name(pred))} ({score:.2f})</div></td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table></body></html>")
    out.write_text("\n".join(parts), encoding="utf-8")
    return out

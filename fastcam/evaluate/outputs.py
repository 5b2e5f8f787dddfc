"""What an evaluation writes: Markdown tables, plots, and the "Evaluation" section of HTML reports.

Tables and plots name methods by their display names ("Grad-CAM++"); the JSON keeps the ids. Every mean
comes with its 95% percentile-bootstrap interval (`fastcam.evaluate.stats`): in brackets in the tables,
as error bars on the bar plots and as shaded bands around the mean deletion/insertion curves.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fastcam.evaluate.catalog import METRICS
from fastcam.evaluate.scoring import RunMetrics
from fastcam.io.report import ReportEvaluation, url
from fastcam.io.run import Run
from fastcam.methods.registry import display_name

EVAL_BEGIN, EVAL_END = "<!-- fastcam-eval -->", "<!-- /fastcam-eval -->"


def markdown_table(results: Sequence[RunMetrics], metrics: Sequence[str]) -> str:
    """One row per run: its name, method (display name), images, accuracy when known, each metric's mean (n);
    then the runs' notes."""
    cols = [m for m in metrics if any(m in r.values and r.values[m] for r in results)]
    show_acc = any(r.accuracy is not None for r in results)
    head = ["run", "method", "images"] + (["accuracy"] if show_acc else []) + [METRICS[m].title for m in cols]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|" + "---:|" * (len(head) - 3)]
    for r in results:
        s = r.summary()
        cells = [r.name, display_name(r.method), str(r.n)] + ([_f(r.accuracy, 3)] if show_acc else [])
        for m in cols:
            cells.append(_cell(s.get(m)))
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r.name}: {note}" for r in results for note in r.notes]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _cell(stats: dict[str, float] | None) -> str:
    """"0.412 [0.380, 0.447] (n=48)": mean, 95% bootstrap interval, count."""
    if not stats or not stats["n"]:
        return "—"
    return f"{_f(stats['mean'], 3)} [{_f(stats['ci_low'], 3)}, {_f(stats['ci_high'], 3)}] (n={stats['n']})"


def _f(x: float | None, digits: int) -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def plot(results: Sequence[RunMetrics], metrics: Sequence[str], out: Path) -> list[Path]:
    """curves.png, metrics.png, robustness.png under `out` (each only when it has data)."""
    written = []
    for name, png in figures(results, metrics):
        written.append(out / f"{name}.png")
        written[-1].write_bytes(png)
    return written


#: the plots' captions in reports
CAPTIONS = {"curves": "Mean deletion and insertion curves, shaded: 95% bootstrap interval of the mean",
            "metrics": "Mean of each metric per run, error bars: 95% bootstrap interval",
            "robustness": "SSIM and MSE between clean and noisy-gradient maps, per noise level"}


def figures(results: Sequence[RunMetrics], metrics: Sequence[str]) -> list[tuple[str, bytes]]:
    """(name, PNG bytes) of the plots that have data: "curves" (mean deletion/insertion curves with their
    bootstrap bands), "metrics" (bars per metric and run, bootstrap error bars), "robustness"."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[tuple[str, bytes]] = []

    def keep(name: str, fig: object) -> None:
        buffer = io.BytesIO()
        fig.tight_layout()  # type: ignore[attr-defined]
        fig.savefig(buffer, format="png", dpi=110)  # type: ignore[attr-defined]
        plt.close(fig)  # type: ignore[arg-type]
        made.append((name, buffer.getvalue()))

    with_curves = [r for r in results if r.curves]
    if with_curves:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, kind in zip(axes, ("deletion", "insertion")):
            for i, r in enumerate(with_curves):
                if kind in r.curves:
                    y = np.asarray(r.curves[kind])
                    x = np.linspace(0, 1, len(y))
                    auc = float(np.mean(r.values[kind])) if r.values.get(kind) else float("nan")
                    ax.plot(x, y, color=f"C{i}", label=f"{r.label} (AUC {auc:.3f})")
                    band = r.curves_ci.get(kind)
                    if band and len(band) == 2 and len(band[0]) == len(y):
                        ax.fill_between(x, band[0], band[1], color=f"C{i}", alpha=0.2, linewidth=0)
            ax.set(title=f"{kind} (mean over images, 95% CI)",
                   xlabel=f"fraction of pixels {'removed' if kind == 'deletion' else 'inserted'}",
                   ylabel="target probability", ylim=(0, 1.02))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        keep("curves", fig)
    cols = [m for m in metrics if any(r.values.get(m) for r in results)]
    if cols:
        ncols = min(5, len(cols))
        nrows = -(-len(cols) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(2.8 * ncols, 3.2 * nrows), squeeze=False)
        for ax in axes.flat[len(cols):]:
            ax.set_visible(False)
        names = [r.label for r in results]
        summaries = [r.summary() for r in results]
        for ax, m in zip(axes.flat, cols):
            means = np.array([s[m]["mean"] if m in s and s[m]["n"] else np.nan for s in summaries])
            low = np.array([s[m]["ci_low"] if m in s and s[m]["n"] else np.nan for s in summaries])
            high = np.array([s[m]["ci_high"] if m in s and s[m]["n"] else np.nan for s in summaries])
            x = np.arange(len(names))
            ax.bar(x, np.nan_to_num(means), color=[f"C{i}" for i in range(len(names))])
            has = ~np.isnan(low)  # the interval as an error bar with caps
            ax.vlines(x[has], low[has], high[has], colors="black", linewidth=1)
            ax.hlines(np.concatenate([low[has], high[has]]), np.tile(x[has] - 0.15, 2), np.tile(x[has] + 0.15, 2),
                      colors="black", linewidth=1)
            ax.set_xticks(range(len(names)), names, rotation=60, fontsize=7)
            ax.set_title(METRICS[m].title, fontsize=8)
        keep("metrics", fig)
    robust = [r for r in results if r.robustness]
    if robust:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for r in robust:
            axes[0].plot(r.robustness["sigmas"], r.robustness["ssim"], marker="o", label=r.label)
            axes[1].plot(r.robustness["sigmas"], r.robustness["mse"], marker="o", label=r.label)
        axes[0].set(title="SSIM clean vs noisy-gradient map", xlabel="gradient noise σ", ylabel="SSIM")
        axes[1].set(title="MSE clean vs noisy-gradient map", xlabel="gradient noise σ", ylabel="MSE")
        for ax in axes:
            ax.legend(fontsize=8)
        keep("robustness", fig)
    return made


def report_evaluation(runs: Sequence[Run], metrics: Sequence[str] | None = None) -> ReportEvaluation | None:
    """The "Evaluation" section of a report over `runs`, from each run's RUN/eval/metrics.json: the summary
    table (one row per evaluated run), the plots and each image's scores. None when no run was evaluated
    (or its record is unreadable)."""
    results: list[RunMetrics] = []
    per_image: dict[str, dict[str, dict[str, float]]] = {}
    links = []
    for run in runs:
        record_path = run.directory.eval / "metrics.json"
        try:
            result = RunMetrics.from_json(json.loads(record_path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
        result.name, result.method = Path(run.path).name, run.method  # as the run says, not the record
        results.append(result)
        links.append((f"{result.label}: metrics.md", run.directory.eval / "metrics.md"))
        scores: dict[str, dict[str, float]] = {}
        for m in result.values:
            for sid, value in result.per_image(m).items():
                scores.setdefault(str(sid), {})[m] = value
        per_image[str(Path(run.path).resolve())] = scores
    if not results:
        return None
    names = [m for m in (metrics or METRICS) if any(r.values.get(m) for r in results)]
    show_acc = any(r.accuracy is not None for r in results)
    header = ["run", "method", "images"] + (["accuracy"] if show_acc else []) + [METRICS[m].title for m in names]
    rows: list[list[Any]] = []
    for r in results:
        s = r.summary()
        row: list[Any] = [r.name, display_name(r.method), str(r.n)] + ([_f(r.accuracy, 3)] if show_acc else [])
        for m in names:
            row.append({"mean": _f(s[m]["mean"], 3), "ci": f"[{_f(s[m]['ci_low'], 3)}, {_f(s[m]['ci_high'], 3)}]",
                        "n": str(s[m]["n"])} if m in s and s[m]["n"] else "—")
        rows.append(row)
    notes = ["Each cell: mean [95% percentile-bootstrap interval of the mean, 1000 resamples] (n images). "
             "↑ higher is better, ↓ lower is better."]
    by_note: dict[str, list[str]] = {}  # one line per note, naming every run it applies to
    for r in results:
        for note in r.notes:
            by_note.setdefault(note, []).append(r.label)
    notes += [f"{', '.join(labels)}: {note}" for note, labels in by_note.items()]
    plots = [(CAPTIONS.get(name, name), png) for name, png in figures(results, names)]
    return ReportEvaluation(header=header, rows=rows, notes=notes, plots=plots, per_image=per_image,
                            titles={m: METRICS[m].title for m in METRICS}, links=links)


def link_into_report(report: Path, out: Path, table_md: str, images: Sequence[Path]) -> None:
    """Insert (or replace) an "Evaluation" section before </body> of an HTML report that does not embed
    its arguments (one written by hand or by fastcam 0.1; the others are rendered again)."""
    text = report.read_text(encoding="utf-8")
    base = report.parent

    def rel(p: Path) -> str:
        return html.escape(url(p, base))

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

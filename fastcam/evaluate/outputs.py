"""What an evaluation writes: Markdown tables, plots, and an "Evaluation" section in HTML reports.

Tables and plots name methods by their display names ("Grad-CAM++"); the JSON keeps the ids.
"""
from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from fastcam.evaluate.catalog import METRICS
from fastcam.evaluate.scoring import RunMetrics
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
                    ax.plot(np.linspace(0, 1, len(y)), y, label=f"{r.label} (AUC {auc:.3f})")
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
        names = [r.label for r in results]
        for ax, m in zip(axes.flat, cols):
            means = [float(np.mean(r.values[m])) if r.values.get(m) else 0.0 for r in results]
            ax.bar(range(len(names)), means, color=[f"C{i}" for i in range(len(names))])
            ax.set_xticks(range(len(names)), names, rotation=60, fontsize=7)
            ax.set_title(METRICS[m].title, fontsize=8)
        fig.tight_layout()
        written.append(out / "metrics.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
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

"""The metrics `fastcam eval` computes, their groups, and how a `--metrics` list is read.

Torch-free: `fastcam eval --help` lists the metrics from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class MetricInfo:
    """One metric of the evaluation.

    Attributes:
        title: the column title of the tables and plots (with ↑/↓ for the better direction).
        higher_is_better: the direction of improvement.
        needs_model: it runs the model on (perturbed) images, so the run's model and images must be rebuilt.
        needs_masks: it compares maps with ground-truth masks.
    """

    title: str
    higher_is_better: bool
    needs_model: bool
    needs_masks: bool


#: metric name -> its description, in table order
METRICS: dict[str, MetricInfo] = {
    "deletion": MetricInfo("Deletion AUC ↓", False, True, False),
    "insertion": MetricInfo("Insertion AUC ↑", True, True, False),
    "average_drop": MetricInfo("Average Drop % ↓", False, True, False),
    "increase": MetricInfo("Increase in Conf. % ↑", True, True, False),
    "pointing_game": MetricInfo("Pointing game ↑", True, False, True),
    "energy_pointing_game": MetricInfo("Energy PG ↑", True, False, True),
    "precision": MetricInfo("Act. precision ↑", True, False, True),
    "sensitivity": MetricInfo("Act. sensitivity ↑", True, False, True),
    "robustness": MetricInfo("Robustness SSIM ↑ (mean over σ)", True, True, False),
}
GROUPS: dict[str, tuple[str, ...]] = {
    "faithfulness": ("deletion", "insertion", "average_drop", "increase"),
    "localization": ("pointing_game", "energy_pointing_game", "precision", "sensitivity"),
    "all": tuple(METRICS),
}


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

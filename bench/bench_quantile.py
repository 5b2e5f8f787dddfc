"""`pairwise_quantile` benchmark: fastcam's batched torch path against scipy `pdist` + `np.quantile`.

Workload (issue 11): B = 16 problems of N = 2,048, 512 and 384 points × D = 49 (real ResNet-50 layer4
activations, as in bench_dbscan.py), q = 0.25. The reference quantile is numpy's over the explicit
off-diagonal distance matrix; scipy's pdist holds each unordered pair once, and np.quantile over it is
the usual fast CPU way to get the same statistic (it differs from the both-orders list only through the
rank convention: both are timed as users would write them, and fastcam's result is checked bit for bit
against numpy's explicit-matrix definition on the first problem). Interleaved rounds, wall-clock medians
(the target) and process CPU time, saved with the environment under bench/results/.

    python bench/bench_quantile.py                  # N = 2048, 512, 384; B = 16
    python bench/bench_quantile.py --shapes 2048 --repeats 5
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.distance import pdist

from fastcam.cluster import pairwise_quantile

# the workload and the interleaved timer are bench_dbscan.py's (bench/ is not a package: load it by path)
_spec = importlib.util.spec_from_file_location("bench_dbscan", Path(__file__).with_name("bench_dbscan.py"))
bench_dbscan = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_dbscan)

QUANTILE = 0.25


def numpy_explicit_quantile(points: np.ndarray, q: float, block: int = 128) -> float:
    """np.quantile of the explicit off-diagonal distance matrix (pairwise_quantile's definition)."""
    x = points.astype(np.float64)
    rows = [np.sqrt(((x[s : s + block, None] - x[None]) ** 2).sum(-1)) for s in range(0, len(x), block)]
    distances = np.concatenate(rows)
    return float(np.quantile(distances[~np.eye(len(x), dtype=bool)], q))


def run_shape(batch: int, count: int, device: torch.device, repeats: int) -> dict:
    points = bench_dbscan.layer4_activations(batch, count, device)
    host = points.cpu().double().numpy()
    timed = bench_dbscan.interleaved({
        "torch": lambda: pairwise_quantile(points, QUANTILE),
        "scipy": lambda: np.array([np.quantile(pdist(host[b]), QUANTILE) for b in range(batch)]),
    }, repeats, device)
    ours = timed["torch"]["result"].cpu().numpy()
    record = {
        "batch": batch, "points": count, "dims": host.shape[-1], "q": QUANTILE, "repeats": repeats,
        "bit_exact_first_problem": bool(ours[0] == numpy_explicit_quantile(host[0], QUANTILE)),
        "max_relative_difference_vs_scipy": float(np.max(np.abs(ours - timed["scipy"]["result"]) / ours)),
    }
    bench_dbscan.add_timings(record, timed, baseline="scipy")
    return record


def main(argv: list[str] | None = None) -> int:
    return bench_dbscan.run_benchmark("quantile", run_shape, bench_dbscan.arguments(__doc__, argv))


try:
    import pytest

    @pytest.mark.parametrize("count", bench_dbscan.SHAPES[1:])
    def test_bench_pairwise_quantile(benchmark, count):
        points, _ = bench_dbscan._bench_points(count)
        benchmark(lambda: bench_dbscan._sync(pairwise_quantile(points, QUANTILE)))
except ImportError:  # pragma: no cover
    pass


if __name__ == "__main__":
    sys.exit(main())

"""Batched DBSCAN benchmark: fastcam's torch backend against the scikit-learn per-problem loop.

Workload (issue 3): B = 1,024 problems of 1,536 points × 49 dims and of 384 × 64, CF-CAM-like: ReLU'd
Gaussian blobs plus uniform noise, ε = the 25th percentile of each problem's pairwise distances
(`fastcam.cluster.pairwise_quantile`, CF-CAM's rule), min_samples = 4. Labels are checked identical
problem by problem; speed is measured here, never asserted in tests.

    python bench/bench_dbscan.py                      # full size, on CUDA when available
    python bench/bench_dbscan.py --batch 32 --device cpu
    python -m pytest bench/ -k 'dbscan or quantile' --benchmark-enable   # small pytest-benchmark versions

GPU timings use CUDA events around fully synchronised calls (the torch backend syncs internally anyway).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from fastcam.benchmark import environment  # one record of device, versions, commit, date for every benchmark

from fastcam.cluster import dbscan, pairwise_quantile

SHAPES = ((1536, 49), (384, 64))
MIN_SAMPLES = 4
QUANTILE = 0.25


def make_problems(batch: int, count: int, dims: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """(B, N, D) float32 CF-CAM-like point clouds: ReLU(blobs) with 10% uniform noise and a few duplicates."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(batch, 3, dims, generator=generator) * 3
    member = torch.randint(0, 3, (batch, count), generator=generator)
    points = centres.gather(1, member.unsqueeze(-1).expand(-1, -1, dims)) + torch.randn(batch, count, dims, generator=generator)
    noise = torch.rand(batch, count, generator=generator) < 0.1
    points[noise] = (torch.rand(int(noise.sum()), dims, generator=generator) * 12 - 6)
    points[:, 1::50] = points[:, ::50][:, : points[:, 1::50].shape[1]]  # exact duplicates, as dead channels give
    return points.clamp_min_(0).to(device)


def _timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, object]:
    """Median wall time in seconds over `repeats` runs (after one warm-up), and the last result."""
    result = fn()  # warm-up (CUDA context, cuBLAS handles, caching allocator)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            result = fn()
            stop.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(stop) / 1e3)
        else:
            begin = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - begin)
    return statistics.median(times), result


def run_shape(batch: int, count: int, dims: int, device: torch.device, repeats: int, sklearn_problems: int | None) -> dict:
    points = make_problems(batch, count, dims, device)
    quantile_s, eps = _timed(lambda: pairwise_quantile(points, QUANTILE), device, repeats)
    torch_s, labels = _timed(lambda: dbscan(points, eps, MIN_SAMPLES, backend="torch"), device, repeats)
    labels = labels.cpu().numpy()

    # the scikit-learn loop (float64 on the host), on all problems or a prefix (then per-problem extrapolated)
    subset = batch if sklearn_problems is None else min(batch, sklearn_problems)
    host_points = points[:subset].cpu()
    host_eps = eps[:subset].cpu()
    begin = time.perf_counter()
    reference = dbscan(host_points, host_eps, MIN_SAMPLES, backend="sklearn").numpy()
    sklearn_measured_s = time.perf_counter() - begin
    sklearn_s = sklearn_measured_s * batch / subset

    identical = (reference == labels[:subset]).all(axis=1)
    clusters = labels.max(axis=1) + 1
    return {
        "batch": batch,
        "points": count,
        "dims": dims,
        "min_samples": MIN_SAMPLES,
        "eps_rule": f"pairwise_quantile(points, {QUANTILE})",
        "pairwise_quantile_s": quantile_s,
        "torch_dbscan_s": torch_s,
        "torch_ms_per_problem": 1e3 * torch_s / batch,
        "sklearn_loop_s": sklearn_s,
        "sklearn_problems_timed": subset,
        "sklearn_extrapolated": subset != batch,
        "sklearn_ms_per_problem": 1e3 * sklearn_measured_s / subset,
        "speedup_torch_vs_sklearn": sklearn_s / torch_s,
        "labels_identical_problems": int(identical.sum()),
        "labels_compared_problems": subset,
        "mean_clusters": float(clusters.mean()),
        "noise_fraction": float((labels == -1).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--shapes", default=",".join(f"{n}x{d}" for n, d in SHAPES), help="e.g. 1536x49,384x64")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sklearn-problems", type=int, default=None, help="time sklearn on this many problems only")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--no-save", action="store_true", help="print only (smoke runs)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    record = {"benchmark": "dbscan", "environment": environment(device), "results": []}
    for shape in args.shapes.split(","):
        count, dims = (int(v) for v in shape.lower().split("x"))
        result = run_shape(args.batch, count, dims, device, args.repeats, args.sklearn_problems)
        record["results"].append(result)
        print(json.dumps(result), flush=True)
    if not args.no_save:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = args.out / f"dbscan_{device.type}_B{args.batch}_{stamp}.json"
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------------------- pytest-benchmark
# small versions (B = 8), collected by bench/conftest.py: `python -m pytest bench/ -k 'dbscan or quantile'`

def _bench_points(shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    points = make_problems(8, *shape, device)
    return points, pairwise_quantile(points, QUANTILE)


def _sync(result: object) -> object:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result


try:
    import pytest

    @pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
    def test_bench_dbscan_torch(benchmark, shape):
        points, eps = _bench_points(shape)
        labels = benchmark(lambda: _sync(dbscan(points, eps, MIN_SAMPLES, backend="torch")))
        reference = dbscan(points.cpu(), eps.cpu(), MIN_SAMPLES, backend="sklearn")
        assert torch.equal(labels.cpu(), reference)

    @pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
    def test_bench_dbscan_sklearn_loop(benchmark, shape):
        points, eps = _bench_points(shape)
        points, eps = points.cpu(), eps.cpu()
        benchmark(lambda: dbscan(points, eps, MIN_SAMPLES, backend="sklearn"))

    @pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
    def test_bench_pairwise_quantile(benchmark, shape):
        points, _ = _bench_points(shape)
        benchmark(lambda: _sync(pairwise_quantile(points, QUANTILE)))
except ImportError:  # pragma: no cover - pytest is only needed for the pytest-benchmark entry points
    pass


if __name__ == "__main__":
    sys.exit(main())

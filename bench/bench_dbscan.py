"""Batched DBSCAN and pairwise-quantile benchmarks: fastcam's torch paths against scikit-learn and scipy.

Workload (issue 11): B = 16 problems of N = 2,048, 512 and 384 points × D = 49: real post-ReLU layer4
activations of a random-weight ResNet-50 (`fastcam.models`, 224 px, the first N of its 2,048 channels),
ε = the 25th percentile of each problem's pairwise distances (CF-CAM's rule), min_samples = CF-CAM's
max(2, ⌊0.05·N⌋). Contenders, run interleaved (each repeat runs every contender once, in rotating
order, so that machine load hits them alike):

* ``torch``: `dbscan(points, eps, min_samples, backend="torch")`;
* ``sklearn``: the scikit-learn loop, `dbscan(..., backend="sklearn")` (float64, one fit per problem);
* ``quantile_dbscan``: ε and labels from one shared distance computation (CF-CAM's call).

Labels are checked identical to scikit-learn's problem by problem. Wall-clock medians (the targets) and
the process CPU time of each contender are recorded, with the environment, under bench/results/.

`--workload quantile` times `pairwise_quantile` on the same activations, q = 0.25, against scipy `pdist` +
`np.quantile`. The reference quantile is numpy's over the explicit off-diagonal distance matrix; scipy's
pdist holds each unordered pair once, and np.quantile over it is the usual fast CPU way to get the same
statistic (it differs from the both-orders list only through the rank convention: both are timed as users
would write them, and fastcam's result is checked bit for bit against numpy's explicit-matrix definition
on the first problem).

Timing: `fastcam.benchmark.timing.time_interleaved` (the one timer of every benchmark), after two warm-up
calls of each contender.

    python bench/bench_dbscan.py                       # N = 2048, 512, 384; B = 16; CPU (or CUDA)
    python bench/bench_dbscan.py --shapes 2048 --batch 16 --repeats 5
    python bench/bench_dbscan.py --workload quantile   # pairwise_quantile against scipy
    python -m pytest bench/ -k 'dbscan or quantile' --benchmark-enable   # small pytest-benchmark versions
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fastcam.benchmark import environment  # one record of device, versions, commit, date for every benchmark
from fastcam.benchmark.timing import Timing, time_interleaved
from fastcam.cluster import dbscan, pairwise_quantile, quantile_dbscan

SHAPES = (2048, 512, 384)
DIMS = 49
QUANTILE = 0.25


def min_samples_for(count: int) -> int:
    """CF-CAM's rule: max(2, ⌊0.05·N⌋)."""
    return max(2, int(0.05 * count))


def layer4_activations(batch: int, count: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """(B, N, 49) float32: the first N channels of a random-weight ResNet-50's layer4 output (224 px),
    one random image per problem; cached on disk-free memory per (batch, seed)."""
    return _layer4(batch, seed)[:, :count].contiguous().to(device)


_CACHE: dict[tuple[int, int], torch.Tensor] = {}


def _layer4(batch: int, seed: int) -> torch.Tensor:
    if (batch, seed) not in _CACHE:
        from fastcam.models import resnet50

        torch.manual_seed(seed)
        model = resnet50().eval()
        images = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(seed + 1))
        with torch.no_grad():
            x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
            x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
        _CACHE[batch, seed] = x.flatten(2)
    return _CACHE[batch, seed]


def run_shape(batch: int, count: int, device: torch.device, repeats: int) -> dict:
    points = layer4_activations(batch, count, device)
    eps = pairwise_quantile(points, QUANTILE)
    min_samples = min_samples_for(count)
    host_points, host_eps = points.cpu(), eps.cpu()
    calls = {
        "torch": lambda: dbscan(points, eps, min_samples, backend="torch"),
        "sklearn": lambda: dbscan(host_points, host_eps, min_samples, backend="sklearn"),
        "quantile_dbscan": lambda: quantile_dbscan(points, QUANTILE, min_samples),
    }
    timed = time_interleaved(calls, device, warmup=2, repeats=repeats)
    reference = calls["sklearn"]().numpy()
    labels = calls["torch"]().cpu().numpy()
    shared_labels, shared_eps = (t.cpu() for t in calls["quantile_dbscan"]())
    clusters = reference.max(axis=1) + 1
    record = {
        "batch": batch, "points": count, "dims": DIMS, "min_samples": min_samples,
        "eps_rule": f"pairwise_quantile(points, {QUANTILE})", "repeats": repeats,
        "labels_identical_problems": int((labels == reference).all(axis=1).sum()),
        "quantile_dbscan_identical_problems": int((shared_labels.numpy() == reference).all(axis=1).sum()),
        "quantile_dbscan_eps_identical": bool(torch.equal(shared_eps, host_eps)),
        "mean_clusters": float(clusters.mean()), "noise_fraction": float((reference == -1).mean()),
    }
    add_timings(record, timed, baseline="sklearn")
    return record


def numpy_explicit_quantile(points: np.ndarray, q: float, block: int = 128) -> float:
    """np.quantile of the explicit off-diagonal distance matrix (pairwise_quantile's definition)."""
    x = points.astype(np.float64)
    rows = [np.sqrt(((x[s : s + block, None] - x[None]) ** 2).sum(-1)) for s in range(0, len(x), block)]
    distances = np.concatenate(rows)
    return float(np.quantile(distances[~np.eye(len(x), dtype=bool)], q))


def run_quantile_shape(batch: int, count: int, device: torch.device, repeats: int) -> dict:
    from scipy.spatial.distance import pdist

    points = layer4_activations(batch, count, device)
    host = points.cpu().double().numpy()
    calls = {
        "torch": lambda: pairwise_quantile(points, QUANTILE),
        "scipy": lambda: np.array([np.quantile(pdist(host[b]), QUANTILE) for b in range(batch)]),
    }
    timed = time_interleaved(calls, device, warmup=2, repeats=repeats)
    ours = calls["torch"]().cpu().numpy()
    record = {
        "batch": batch, "points": count, "dims": host.shape[-1], "q": QUANTILE, "repeats": repeats,
        "bit_exact_first_problem": bool(ours[0] == numpy_explicit_quantile(host[0], QUANTILE)),
        "max_relative_difference_vs_scipy": float(np.max(np.abs(ours - calls["scipy"]()) / ours)),
    }
    add_timings(record, timed, baseline="scipy")
    return record


def add_timings(record: dict, timed: dict[str, Timing], baseline: str) -> None:
    """Each contender's median wall/CPU seconds (and every round's wall time) and its speedups over the
    baseline, wall and CPU, into `record`."""
    for name, timing in timed.items():
        record[f"{name}_wall_s"] = timing.median_s
        record[f"{name}_cpu_s"] = timing.cpu_median_s
        record[f"{name}_wall_all_s"] = timing.times_s
    for name in timed:
        if name != baseline:
            for clock in ("wall", "cpu"):
                record[f"speedup_{name}_vs_{baseline}_{clock}"] = record[f"{baseline}_{clock}_s"] / record[f"{name}_{clock}_s"]


def save(record: dict, out: Path, stem: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"{stem}_{stamp}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def arguments(doc: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=tuple(WORKLOADS), default="dbscan",
                        help="dbscan: the batched DBSCAN against scikit-learn; quantile: pairwise_quantile against scipy")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--shapes", default=",".join(map(str, SHAPES)), help="points per problem, e.g. 2048,512")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--no-save", action="store_true", help="print only (smoke runs)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:  # on a loaded machine 2 OpenMP threads spin-wait on each other: 1 measures the work itself
        torch.set_num_threads(args.threads)
    return args


def run_benchmark(name: str, run: Callable[[int, int, torch.device, int], dict], args: argparse.Namespace) -> int:
    """Every shape through `run`, printed as it comes, then one JSON with the environment record."""
    device = torch.device(args.device)
    record = {"benchmark": name, "environment": environment(device), "results": []}
    for count in (int(v) for v in args.shapes.split(",")):
        result = run(args.batch, count, device, args.repeats)
        record["results"].append(result)
        print(json.dumps({k: v for k, v in result.items() if not k.endswith("_all_s")}), flush=True)
    if not args.no_save:
        threads = f"_t{args.threads}" if args.threads else ""
        print(f"wrote {save(record, args.out, f'{name}_{device.type}_B{args.batch}{threads}')}")
    return 0


#: workload -> its per-shape run (the JSON records are named after the workload)
WORKLOADS: dict[str, Callable[[int, int, torch.device, int], dict]] = {"dbscan": run_shape, "quantile": run_quantile_shape}


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, argv)
    return run_benchmark(args.workload, WORKLOADS[args.workload], args)


# ----------------------------------------------------------------------------------------- pytest-benchmark
# small versions (B = 4), collected by bench/conftest.py: `python -m pytest bench/ -k 'dbscan or quantile'`

def _bench_points(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    points = layer4_activations(4, count, device)
    return points, pairwise_quantile(points, QUANTILE)


def _sync(result: object) -> object:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result


try:
    import pytest

    @pytest.mark.parametrize("count", SHAPES[1:])
    def test_bench_dbscan_torch(benchmark, count):
        points, eps = _bench_points(count)
        labels = benchmark(lambda: _sync(dbscan(points, eps, min_samples_for(count), backend="torch")))
        reference = dbscan(points.cpu(), eps.cpu(), min_samples_for(count), backend="sklearn")
        assert torch.equal(labels.cpu(), reference)

    @pytest.mark.parametrize("count", SHAPES[1:])
    def test_bench_dbscan_sklearn_loop(benchmark, count):
        points, eps = _bench_points(count)
        points, eps = points.cpu(), eps.cpu()
        benchmark(lambda: dbscan(points, eps, min_samples_for(count), backend="sklearn"))

    @pytest.mark.parametrize("count", SHAPES[1:])
    def test_bench_quantile_dbscan(benchmark, count):
        points, _ = _bench_points(count)
        benchmark(lambda: _sync(quantile_dbscan(points, QUANTILE, min_samples_for(count))))

    @pytest.mark.parametrize("count", SHAPES[1:])
    def test_bench_pairwise_quantile(benchmark, count):
        points, _ = _bench_points(count)
        benchmark(lambda: _sync(pairwise_quantile(points, QUANTILE)))
except ImportError:  # pragma: no cover - pytest is only needed for the pytest-benchmark entry points
    pass


if __name__ == "__main__":
    sys.exit(main())

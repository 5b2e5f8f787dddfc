"""Batched DBSCAN benchmark: fastcam's torch backend against the scikit-learn per-problem loop.

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

    python bench/bench_dbscan.py                       # N = 2048, 512, 384; B = 16; CPU (or CUDA)
    python bench/bench_dbscan.py --shapes 2048 --batch 16 --repeats 5
    python -m pytest bench/ -k 'dbscan or quantile' --benchmark-enable   # small pytest-benchmark versions
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


def interleaved(contenders: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, dict]:
    """Median wall and CPU seconds of each contender over `repeats` rounds (after one warm-up round);
    round r runs the contenders starting at a rotating offset. Returns {name: {wall_s, cpu_s, result}}."""
    names = list(contenders)
    results = {name: contenders[name]() for name in names for _ in range(2)}  # warm-up (allocator, lazy inits)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            begin, begin_cpu = time.perf_counter(), time.process_time()
            results[name] = contenders[name]()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall[name].append(time.perf_counter() - begin)
            cpu[name].append(time.process_time() - begin_cpu)
    return {name: {"wall_s": statistics.median(wall[name]), "cpu_s": statistics.median(cpu[name]),
                   "wall_all_s": wall[name], "result": results[name]} for name in names}


def run_shape(batch: int, count: int, device: torch.device, repeats: int) -> dict:
    points = layer4_activations(batch, count, device)
    eps = pairwise_quantile(points, QUANTILE)
    min_samples = min_samples_for(count)
    host_points, host_eps = points.cpu(), eps.cpu()
    timed = interleaved({
        "torch": lambda: dbscan(points, eps, min_samples, backend="torch"),
        "sklearn": lambda: dbscan(host_points, host_eps, min_samples, backend="sklearn"),
        "quantile_dbscan": lambda: quantile_dbscan(points, QUANTILE, min_samples),
    }, repeats, device)
    reference = timed["sklearn"]["result"].numpy()
    labels = timed["torch"]["result"].cpu().numpy()
    shared_labels, shared_eps = (t.cpu() for t in timed["quantile_dbscan"]["result"])
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


def add_timings(record: dict, timed: dict[str, dict], baseline: str) -> None:
    """Each contender's median wall/CPU seconds (and every round's wall time) and its speedups over the
    baseline, wall and CPU, into `record`."""
    for name, entry in timed.items():
        record[f"{name}_wall_s"] = entry["wall_s"]
        record[f"{name}_cpu_s"] = entry["cpu_s"]
        record[f"{name}_wall_all_s"] = entry["wall_all_s"]
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


def main(argv: list[str] | None = None) -> int:
    return run_benchmark("dbscan", run_shape, arguments(__doc__, argv))


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
except ImportError:  # pragma: no cover - pytest is only needed for the pytest-benchmark entry points
    pass


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: `fastcam explain` on the Ray engine (`fastcam.ray.explain_dataset`) against the local engine, on
the same job.

The job: Grad-CAM of ResNet-18 (`fastcam:resnet18`, seeded random weights saved to a file) at 224 px, layer4,
on 512 random 224×224 PNGs, batches of 32, maps stored as float16, in a fresh run directory each time.
Contenders: the local engine (`fastcam.pipeline.explain_folder`, this process, torch's default threads) and the
Ray engine with 1 and 2 actors on one local Ray started once for the whole benchmark (its start is not timed;
each Ray run's actor start and model load are). images/s = images / wall seconds of the whole call (setup,
reading, explaining, store writes and commits). Rounds are interleaved (each round runs every contender once,
in turn), so drifting machine load hits all of them alike; the median of the rounds is reported.

Where Ray's time goes comes from the run's own record (run.json `engine.time_split`): decode-task seconds and
actor explain seconds summed over batches, committer write seconds, the wait for the first explained batch
(actors starting, model loads), and the remainder of the wall time (scheduling, object store transfers,
pickling, the polling driver).

    python bench/bench_ray.py                       # the issue's job: 512 images, resnet18, 224 px
    python bench/bench_ray.py --images 64 --model tiny_resnet --size 64 --rounds 1   # smoke run
    python bench/bench_ray.py --device cuda --actors 1 --rounds 2   # on a GPU machine: local on cuda, 1 GPU actor

--device cuda explains on the GPU: the local engine with device="cuda", and Ray actors with 1 GPU each (the local
Ray is started with the machine's GPUs; --actors must fit them). The default, cpu, is the CPU job above.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="a fastcam.models builder")
    parser.add_argument("--size", type=int, default=224, help="square image side")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2], help="Ray actor pool sizes to time")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (each runs every contender once)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where both engines explain: cpu (default), or cuda (the local engine on the GPU, "
                        "each Ray actor with 1 GPU)")
    parser.add_argument("--dataset-actors", type=int, nargs="*", default=[],
                        help="Ray actor pool sizes to time with the images given as a ray.data.Dataset "
                        "(read_binary_files, an id per row: two passes and a shuffle into store batches)")
    parser.add_argument("--local-workers", type=int, nargs="+", default=[0],
                        help="DataLoader workers of the local engine (each value a contender; 0, the engine's "
                        "default, decodes in its own process and is the 'local' every ratio is taken against)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: bench/results/ray_...)")
    return parser.parse_args(argv)


def make_inputs(root: Path, count: int, size: int, model: str) -> tuple[Path, Path]:
    """`count` random RGB PNGs and the seeded model's weights file."""
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from fastcam import models

    data = root / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(data / f"im{i:04d}.png")
    torch.manual_seed(0)
    weights = root / "w.safetensors"
    save_file(getattr(models, model)().state_dict(), str(weights))
    return data, weights


def _rows_dataset(ray: Any, data: Path) -> Any:
    """The folder as a user's ray.data.Dataset: the files' bytes and paths, the file name as each row's id."""
    return ray.data.read_binary_files(str(data), include_paths=True).map(
        lambda row: {**row, "id": row["path"].rsplit("/", 1)[-1]})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never report usage
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray binds the loopback address
    import ray
    import torch

    from fastcam.benchmark.provenance import environment, load_average, write_record
    from fastcam.pipeline import explain_folder
    from fastcam.ray import explain_dataset

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_ray: --device cuda, but torch sees no CUDA GPU here")
    work = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    load_before = load_average()
    try:
        data, weights = make_inputs(work, args.images, args.size, args.model)
        common = dict(weights=weights, layer="layer4", method="gradcam", size=args.size, batch_size=args.batch_size,
                      progress=False)
        spec = f"fastcam:{args.model}"
        gpus = torch.cuda.device_count() if args.device == "cuda" else 0
        ray.init(num_cpus=os.cpu_count(), num_gpus=gpus, include_dashboard=False, log_to_driver=False)
        contenders: dict[str, Callable[[Path], Any]] = {
            "local": lambda out: explain_folder(spec, data, out, device=args.device, **common)}
        for workers in (w for w in args.local_workers if w > 0):
            contenders[f"local-{workers}-workers"] = (
                lambda out, w=workers: explain_folder(spec, data, out, device=args.device, workers=w, **common))
        for n in args.actors:
            contenders[f"ray-{n}-actor{'s' if n > 1 else ''}"] = (
                lambda out, n=n: explain_dataset(spec, data, out, actors=n, gpus_per_actor=1.0 if gpus else 0.0,
                                                 **common))
        for n in args.dataset_actors:
            contenders[f"ray-dataset-{n}-actor{'s' if n > 1 else ''}"] = (
                lambda out, n=n: explain_dataset(spec, _rows_dataset(ray, data), out, actors=n,
                                                 gpus_per_actor=1.0 if gpus else 0.0, **common))
        times: dict[str, list[float]] = {name: [] for name in contenders}
        splits: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
        for round_no in range(args.rounds):
            for name, call in contenders.items():
                out = work / f"{name}-{round_no}"
                started = time.perf_counter()
                run = call(out)
                seconds = time.perf_counter() - started
                times[name].append(seconds)
                if "engine" in run.meta:
                    splits[name].append({**run.meta["engine"]["time_split"], "wall_s": round(seconds, 3)})
                print(f"round {round_no}  {name:14s} {args.images / seconds:7.1f} images/s  ({seconds:.1f} s)")
                shutil.rmtree(out)
        resources = ray.cluster_resources()
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    local = args.images / statistics.median(times["local"])
    results = []
    for name, seconds in times.items():
        rate = args.images / statistics.median(seconds)
        results.append({"contender": name, "images_per_s": round(rate, 2), "vs_local": round(rate / local, 3),
                        "seconds": [round(s, 3) for s in seconds], "time_split": splits[name] or None})
    record = {
        "benchmark": "ray", "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": {**environment(torch.device(args.device)), "ray": ray.__version__,
                        "ray_cluster_resources": {k: v for k, v in resources.items() if not k.startswith("node:")},
                        "load_average_1min": [load_before, load_average()]},
        "results": results,
    }
    out = write_record(record, args.out or ROOT / "bench" / "results" /
                       f"ray_{args.model}_{args.size}_{args.images}img_{args.device}.json")
    print(f"bench_ray: results -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

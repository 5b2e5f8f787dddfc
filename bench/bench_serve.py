"""Benchmark: `fastcam serve` under a bounded load from localhost, against the offline batched engine.

The service (`fastcam.serve.start`: a local Ray on 127.0.0.1, one replica) explains a `fastcam.models` builder
(random weights, seeded, saved as safetensors) with Grad-CAM; clients in threads POST the same small set of
PNG files (the model's input size, so no resize) again and again, `--requests` per concurrency level, each
thread waiting for its answer before sending the next. Per level: images/s (requests answered / wall time),
latency p50/p95/p99, the mean batch size (the `X-Fastcam-Batch-Size` header of the answers) and errors
(anything but 200). The offline figures: `explain_folder` (what `fastcam explain` runs: decode, batches of
`--max-batch-size`, the run store) on a folder of the same images, as its run.json times it, and the bare
explainer on one batch of them (the compute alone).

Results go to bench/results/serve_<model>_<size>_<device>.json with the environment record and the 1-minute
load average before and after. The clients share the machine with the service: on a small CPU machine they
take cores from it, so the served figures are a lower bound there.

    python bench/bench_serve.py                                  # resnet18, 224², 1000 requests at 1, 8, 32
    python bench/bench_serve.py --requests 200                   # a shorter run on a shared machine
    python bench/bench_serve.py --model tiny_resnet --size 64 --requests 50 --concurrency 1 8   # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="a fastcam.models builder")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--method", default="gradcam")
    parser.add_argument("--size", type=int, default=224, help="square input side")
    parser.add_argument("--classes", type=int, default=1000, help="classes of the model")
    parser.add_argument("--requests", type=int, default=1000, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--images", type=int, default=16, help="distinct PNG files the clients send")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--cpus", type=float, default=1.0,
                        help="CPUs of the replica (Ray gives it as many torch threads) and torch threads of the offline "
                        "runs; default 1 (on our shared 2-core machines two OpenMP threads collapse under load: "
                        "ResNet-18 Grad-CAM 224 ms/image with 1 thread, 567 with 2, at a load average of 19)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--offline-images", type=int, default=128, help="images of the offline run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: bench/results/serve_...)")
    return parser.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, body: bytes) -> tuple[int, float, int | None]:
    """(status, seconds, batch size) of one POST /explain; status 0 when the connection failed."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "image/png"}, method="POST")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=300) as reply:
            reply.read()
            batch = reply.headers.get("X-Fastcam-Batch-Size")
            return reply.status, time.perf_counter() - start, int(batch) if batch else None
    except urllib.error.HTTPError as err:
        err.read()
        return err.code, time.perf_counter() - start, None
    except OSError:
        return 0, time.perf_counter() - start, None


def load_level(url: str, bodies: list[bytes], requests: int, concurrency: int) -> dict[str, Any]:
    """`requests` POSTs from `concurrency` client threads (each sends its next one after the answer)."""
    def client(worker: int) -> list[tuple[int, float, int | None]]:
        return [_post(url, bodies[i % len(bodies)]) for i in range(worker, requests, concurrency)]

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = [r for rs in pool.map(client, range(concurrency)) for r in rs]
    wall = time.perf_counter() - start
    ok = [r for r in results if r[0] == 200]
    latencies = sorted(r[1] for r in ok)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    batches = [r[2] for r in ok if r[2] is not None]
    return {"concurrency": concurrency, "requests": requests, "errors": len(results) - len(ok),
            "error_statuses": sorted({r[0] for r in results if r[0] != 200}), "wall_s": round(wall, 3),
            "images_per_s": round(len(ok) / wall, 3),
            "latency_ms": {"p50": round(cuts[49] * 1e3, 2), "p95": round(cuts[94] * 1e3, 2),
                           "p99": round(cuts[98] * 1e3, 2), "mean": round(statistics.fmean(latencies) * 1e3, 2)},
            "mean_batch_size": round(statistics.fmean(batches), 3) if batches else None}


def offline(spec: str, weights: Path, folder: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The offline figures with the replica's torch threads: `explain_folder` on the folder (what `fastcam
    explain` runs: decode, batches, the run store; timed by the run itself), and the bare explainer on one batch
    of `--max-batch-size` decoded images (`fastcam.benchmark.time_callable`: the compute alone)."""
    import torch

    from fastcam.benchmark.timing import time_callable
    from fastcam.io.images import read_image
    from fastcam.pipeline import explain_folder, load_model, make_explainer

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(args.cpus)))
    try:
        run = explain_folder(spec, folder, out, weights=weights, num_classes=args.classes, layer=args.layer,
                             method=args.method, size=args.size, batch_size=args.max_batch_size,
                             device=args.device, progress=False)
        model, _ = load_model(spec, weights, args.classes)
        device = torch.device(args.device)
        explainer = make_explainer(model.to(device).eval(), args.method, args.layer)
        files = sorted(folder.iterdir())[: args.max_batch_size]
        images = torch.stack([read_image(f) for f in files]).to(device)
        timing = time_callable(lambda: explainer.explain(images), device, warmup=1, repeats=3)
    finally:
        torch.set_num_threads(threads)
    return {"explain_folder": {"images": len(run), "batch_size": args.max_batch_size,
                               "images_per_s": run.meta.get("timings", {}).get("images_per_s")},
            "explainer": {"batch_size": len(files), "median_s": round(timing.median_s, 4),
                          "images_per_s": round(len(files) / timing.median_s, 3)},
            "torch_threads": max(1, int(args.cpus))}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from fastcam.benchmark.provenance import environment, load_average, write_record
    from fastcam.models import BUILDERS
    from fastcam.serve import ServeOptions, start, stop

    load_before = load_average()
    spec = f"fastcam:{args.model}"
    with tempfile.TemporaryDirectory(prefix="fastcam-bench-serve-") as tmp:
        root = Path(tmp)
        torch.manual_seed(args.seed)
        save_file(BUILDERS[args.model](num_classes=args.classes).state_dict(), str(root / "w.safetensors"))
        rng = np.random.default_rng(args.seed)
        (root / "images").mkdir()
        bodies = []
        for i in range(max(args.images, args.offline_images)):
            path = root / "images" / f"im{i:04d}.png"
            Image.fromarray((rng.random((args.size, args.size, 3)) * 255).astype(np.uint8)).save(path)
            if i < args.images:
                bodies.append(path.read_bytes())

        offline_result = offline(spec, root / "w.safetensors", root / "images", args, root / "run")
        print(f"offline: {json.dumps(offline_result)}", flush=True)

        options = ServeOptions(model=spec, weights=str(root / "w.safetensors"), num_classes=args.classes,
                               layer=args.layer, method=args.method, size=args.size, device=args.device,
                               max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms)
        service = start(options, port=_free_port(), cpus_per_replica=args.cpus)
        try:
            url = service.url + "/explain"
            load_level(url, bodies, 2 * args.max_batch_size, min(args.max_batch_size, 8))  # warm-up, untimed
            levels = []
            for concurrency in args.concurrency:
                level = load_level(url, bodies, args.requests, concurrency)
                for name in ("explain_folder", "explainer"):
                    rate = offline_result[name]["images_per_s"]
                    level[f"vs_offline_{name}"] = round(level["images_per_s"] / rate, 3) if rate else None
                print(json.dumps(level), flush=True)
                levels.append(level)
        finally:
            stop(service)

    import ray

    record = {
        "benchmark": "fastcam serve (Ray Serve, one replica) under a bounded load from localhost threads",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "model": spec, "random_weights": True, "size": args.size, "method": args.method, "layer": args.layer,
        "device": args.device, "max_batch_size": args.max_batch_size, "batch_wait_ms": args.batch_wait_ms,
        "replica_cpus": args.cpus, "distinct_images": args.images,
        "environment": {**environment(torch.device(args.device)), "ray": ray.__version__,
                        "load_average_1min": [load_before, load_average()]},
        "offline": offline_result,
        "served": levels,
    }
    out = write_record(record, args.out or ROOT / "bench" / "results" /
                       f"serve_{args.model}_{args.size}_{args.device}.json")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

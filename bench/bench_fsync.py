"""The cost of durable commits: fsyncing each batch's chunk files, the progress file and their folders.

Two measurements, each alternating fsync off / on (and, for the store, one-after-another fsyncs) over
several repeats, medians reported:

- store: `ShardWriter.write_batch` + `commit` alone, B maps of h×w and K logits per batch (what the
  fsyncs add to each batch, whatever the model);
- explain: `fastcam.explain_dataset` end to end on a tiny ResNet and small synthetic images on the CPU
  (a worst case: the model is so fast that the commit is a large part of each batch).

    python bench/bench_fsync.py --json bench/results/fsync_overhead.json

Timings on a shared machine are noisy; the JSON keeps every repeat.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

import fastcam
from fastcam.io import run as store
from fastcam.io.run import durable
from fastcam.models import tiny_resnet


def _mode(mode: str) -> None:
    durable.DURABLE = mode != "off"
    durable.FSYNC_THREADS = 1 if mode == "serial" else 16


def store_commits(root: Path, mode: str, batches: int, batch: int, hw: int, classes: int) -> float:
    """ms per batch of write_batch + commit."""
    _mode(mode)
    out = root / f"store-{mode}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    n = batches * batch
    store.RunDirectory(out).create(list(range(n)), {"method": "gradcam", "batch_size": batch, "world_size": 1},
                                   input_size=(224, 224), versions={})
    writer = store.ShardWriter(out, 0, 1, n, batch)
    g = torch.Generator().manual_seed(0)
    lowres, logits = torch.rand(batch, hw, hw, generator=g), torch.randn(batch, classes, generator=g)
    ok, targets = torch.ones(batch, dtype=torch.bool), torch.zeros(batch, dtype=torch.long)
    started = time.perf_counter()
    for b in writer.plan():
        writer.write_batch(b, ok, lowres, logits, targets)
        writer.commit(b, [], 0.0, batch, "cpu")
    return (time.perf_counter() - started) / batches * 1e3


def explain_end_to_end(root: Path, mode: str, n: int, batch: int, size: int) -> float:
    """images/s of explain_dataset."""
    _mode(mode)
    out = root / f"explain-{mode}"
    shutil.rmtree(out, ignore_errors=True)
    data = TensorDataset(torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1)))
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=10).eval()
    started = time.perf_counter()
    fastcam.explain_dataset(model, data, method="gradcam", target_layer="layer4", out=out, batch_size=batch,
                            device="cpu", progress=False)
    return n / (time.perf_counter() - started)


def _filesystem(path: Path) -> str:
    try:
        return subprocess.run(["df", "-T", str(path)], capture_output=True, text=True, timeout=10).stdout.split("\n")[1].split()[1]
    except Exception:  # noqa: BLE001 - informational only
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=None, help="where the runs are written (default: a temporary folder "
                        "under the current directory, so the disk is the project's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=60, help="store: batches per repeat")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hw", type=int, default=7, help="store: map side (7 = ResNet layer4 at 224)")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--n", type=int, default=256, help="explain: images per repeat")
    parser.add_argument("--size", type=int, default=32, help="explain: image side")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="fastcam_bench_fsync_", dir=args.dir or "."))
    try:
        ms: dict[str, list[float]] = {"off": [], "serial": [], "on": []}
        ips: dict[str, list[float]] = {"off": [], "on": []}
        explain_end_to_end(root, "off", args.batch_size, args.batch_size, args.size)  # warm-up
        for _ in range(args.repeats):
            for mode in ms:
                ms[mode].append(store_commits(root, mode, args.batches, args.batch_size, args.hw, args.classes))
            for mode in ips:
                ips[mode].append(explain_end_to_end(root, mode, args.n, args.batch_size, args.size))
    finally:
        _mode("on")
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in ms.items()}
    med_ips = {k: statistics.median(v) for k, v in ips.items()}
    result = {
        "what": "fsync overhead of a commit (chunk files + folders + progress file + run folder)",
        "store_ms_per_batch": {k: round(v, 2) for k, v in med.items()},
        "store_fsync_ms_per_batch": round(med["on"] - med["off"], 2),
        "store_fsync_ms_per_batch_serial": round(med["serial"] - med["off"], 2),
        "explain_images_per_s": {k: round(v, 1) for k, v in med_ips.items()},
        "explain_overhead_pct": round(100 * (med_ips["off"] / med_ips["on"] - 1), 1),
        "repeats": {"store_ms": ms, "explain_images_per_s": ips},
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "dir")},
        "filesystem": _filesystem(root.parent), "machine": platform.platform(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
        "note": "shared 2-core machine with other jobs running: timings are noisy (see the repeats)",
    }
    print(f"store, ms per batch of {args.batch_size}: no fsync {med['off']:.1f}, fsync one after another "
          f"{med['serial']:.1f}, fsync concurrently (shipped) {med['on']:.1f}")
    print(f"explain_dataset, images/s: no fsync {med_ips['off']:.1f}, fsync {med_ips['on']:.1f} "
          f"({result['explain_overhead_pct']:+.1f} % time)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Memory of `fastcam.explain_dataset` over a large dataset: RSS must stay flat (the run streams).

Explains N images (default 20,000) made on the fly by a map-style Dataset (or, with --folder, every image
of a folder) into a fresh run directory, and samples the process RSS (VmRSS) every `--every` images.
Prints the samples and writes them as JSON. Flat memory = the RSS after the first few batches stays
within a few MiB until the end, although N images x 12 KiB (64x64x3 float32 = 48 KiB each by default)
pass through.

    python bench/bench_stream_memory.py --n 20000 --out /tmp/stream_run --json bench/results/stream_memory.json
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

import fastcam
from fastcam.methods.registry import method_names
from fastcam.models import tiny_resnet


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class Synthetic(Dataset):
    """Random images made on demand (nothing held); records (index, RSS) every `every` items."""

    def __init__(self, n: int, size: int, every: int) -> None:
        self.n, self.size, self.every = n, size, every
        self.samples: list[tuple[int, float, float]] = []
        self.start = time.perf_counter()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if i % self.every == 0 or i == self.n - 1:
            self.samples.append((i, round(rss_mib(), 1), round(time.perf_counter() - self.start, 2)))
        return torch.rand(3, self.size, self.size, generator=torch.Generator().manual_seed(i))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--method", default="gradcam", choices=method_names(post_hoc=True))
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--out", default="/tmp/fastcam_stream_memory_run")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=10).eval()
    data = Synthetic(args.n, args.size, args.every)
    before = rss_mib()
    started = time.perf_counter()
    run = fastcam.explain_dataset(model, data, method=args.method, target_layer="layer4", out=args.out,
                                  batch_size=args.batch_size, device="cpu", progress=False)
    seconds = time.perf_counter() - started
    samples = data.samples
    steady = [s for s in samples if s[0] >= 2 * args.batch_size]
    growth = steady[-1][1] - steady[0][1] if len(steady) > 1 else 0.0
    print(f"{'images':>8} {'RSS MiB':>9} {'s':>8}")
    for i, rss, t in samples:
        print(f"{i:8d} {rss:9.1f} {t:8.1f}")
    print(f"RSS before: {before:.1f} MiB; after the first batches: {steady[0][1]:.1f} MiB; at the end: "
          f"{steady[-1][1]:.1f} MiB; growth {growth:+.1f} MiB over {steady[-1][0] - steady[0][0]} images; "
          f"{len(run)} images in {seconds:.1f} s ({len(run) / seconds:.1f} images/s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "n": args.n, "size": args.size, "batch_size": args.batch_size, "method": args.method,
            "rss_before_mib": round(before, 1), "samples": samples, "growth_mib": round(growth, 1),
            "seconds": round(seconds, 1), "machine": platform.platform(), "torch": torch.__version__,
        }, indent=1))


if __name__ == "__main__":
    main()

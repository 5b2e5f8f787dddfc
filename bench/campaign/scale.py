"""Scale: `explain_dataset` over many synthetic ImageNet-size images, end to end (store writes included).

For each method and mode (fp32; bf16 autocast + channels_last) and batch size: a warm-up run of two
batches (compilation, autotuning, cuDNN algorithm choice), then a timed run over `--images` images into
a fresh run directory. Reported per run: images/s (the steady-state rate: the warm run's images / wall
time), the time the store's writer thread spent in chunk writes and commits (`ShardWriter.write_batch` +
`commit`, timed in place; the pipeline overlaps them with the next batch's compute, so this is work hidden
behind the GPU, not added to the wall time, unless it exceeds a batch's compute), the GPU
utilisation sampled every 50 ms during the run (NVML through `torch.cuda.utilization`), peak GPU memory,
and the 50,000-image time extrapolated from the measured rate only. Plain inference over the same batches
(no store) is the reference. The largest batch that fits is searched per method with single calls
(doubling, then bisecting on out-of-memory).

The images are a bank of distinct random images kept on the device (`--bank` of them, served by index
modulo the bank), so neither decoding nor the disk limits the rate: what is measured is fastcam.

    python bench/campaign/scale.py --out OUT/scale.json                     # ResNet-50, 224 px, CUDA
    python bench/campaign/scale.py --dry-run --out OUT/scale.json           # tiny, CPU: the code path
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import Dataset

from fastcam.benchmark.timing import time_callable


class DeviceBank(Dataset):
    """`count` items served from `bank` distinct images kept on the device (index modulo the bank)."""

    def __init__(self, count: int, bank: torch.Tensor) -> None:
        self.count, self.bank = count, bank

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.bank[index % self.bank.shape[0]]


@contextlib.contextmanager
def store_timer() -> Iterator[dict[str, float]]:
    """Accumulate the seconds spent in the store's batch writes and commits while active."""
    from fastcam.io.run import writer as store

    spent = {"seconds": 0.0}
    saved = {name: getattr(store.ShardWriter, name) for name in ("write_batch", "commit")}

    def timed(original: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            tick = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent["seconds"] += time.perf_counter() - tick
        return wrapper

    try:
        for name, original in saved.items():
            setattr(store.ShardWriter, name, timed(original))
        yield spent
    finally:
        for name, original in saved.items():
            setattr(store.ShardWriter, name, original)


@contextlib.contextmanager
def utilisation_sampler(device: torch.device) -> Iterator[list[float]]:
    """GPU utilisation (%) sampled every 50 ms in a background thread (empty on CPU or without NVML)."""
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            try:
                samples.append(float(torch.cuda.utilization(device)))
            except Exception:  # noqa: BLE001 - no NVML: no samples
                return

    thread = threading.Thread(target=sample, daemon=True) if device.type == "cuda" else None
    if thread:
        thread.start()
    try:
        yield samples
    finally:
        stop.set()
        if thread:
            thread.join()


def build(model_name: str, method: str, num_classes: int) -> nn.Module:
    from fastcam import models, softcam

    model = models.BUILDERS[model_name](num_classes=num_classes)
    return softcam.convert(model, num_classes) if method == "softcam" else model


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def inference_rate(model: nn.Module, bank: torch.Tensor, batch: int, images: int, amp: str | None) -> float:
    """Plain inference over the same batches (no store): images/s."""
    dtype = {"bf16": torch.bfloat16, None: None}[amp]
    steps = max(1, images // batch)
    x = bank.repeat((batch + bank.shape[0] - 1) // bank.shape[0], 1, 1, 1)[:batch]
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        timing = time_callable(lambda: model(x), x.device, warmup=2, repeats=steps)  # the one timer
    return steps * batch / sum(timing.times_s)


def largest_batch(model: nn.Module, method: str, bank: torch.Tensor, start: int, cap: int, amp: str | None) -> int:
    """The largest batch one explainer call fits in device memory (doubling from `start`, then bisecting)."""
    from fastcam.methods.registry import get_method

    dtype = {"bf16": torch.bfloat16, None: None}[amp]
    explainer = get_method(method).build(model, "layer4" if method != "softcam" else None)

    def fits(batch: int) -> bool:
        x = bank.repeat((batch + bank.shape[0] - 1) // bank.shape[0], 1, 1, 1)[:batch]
        try:
            with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
                explainer.explain(x)
            synchronize(x.device)
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            del x
            if bank.is_cuda:
                torch.cuda.empty_cache()

    low, high = 0, start
    while high <= cap and fits(high):
        low, high = high, high * 2
    high = min(high, cap + 1)
    while high - low > max(1, low // 16):  # within ~6%: enough for a capacity figure
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def run_one(model: nn.Module, method: str, bank: torch.Tensor, images: int, batch: int, amp: str | None,
            device: torch.device, work: Path) -> dict[str, Any]:
    from fastcam import explain_dataset

    layer = None if method == "softcam" else "layer4"
    kwargs = dict(method=method, target_layer=layer, batch_size=batch, device=device, amp=amp, progress=False)
    explain_dataset(model, DeviceBank(2 * batch, bank), out=work / "warm", **kwargs)  # compile, autotune
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    with store_timer() as store, utilisation_sampler(device) as util:
        tick = time.perf_counter()
        run = explain_dataset(model, DeviceBank(images, bank), out=work / "timed", **kwargs)
        synchronize(device)
        wall = time.perf_counter() - tick
    shutil.rmtree(work, ignore_errors=True)
    rate = len(run) / wall
    return {
        "method": method, "batch": batch, "amp": amp, "images": images, "explained": len(run),
        "skipped": len(run.skipped), "wall_s": round(wall, 3), "images_per_s": round(rate, 1),
        "store_s": round(store["seconds"], 3), "store_fraction": round(store["seconds"] / wall, 3),
        "gpu_util_mean": round(sum(util) / len(util), 1) if util else None, "gpu_util_samples": len(util),
        "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "extrapolated_50k_s": round(50_000 / rate, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--bank", type=int, default=512)
    parser.add_argument("--methods", default="gradcam,cfcam,softcam")
    parser.add_argument("--batches", default="64,256", help="batch sizes; 'max' adds the largest that fits (bf16 mode)")
    parser.add_argument("--cap", type=int, default=4096, help="largest batch tried by the search")
    parser.add_argument("--modes", default="fp32,bf16-cl")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: the code path, not a measurement")
    args = parser.parse_args()
    if args.dry_run:
        args.model, args.size, args.classes, args.images, args.bank, args.cap = "tiny_resnet", 32, 5, 8, 4, 8
        args.batches = "4,max"
    from fastcam.benchmark import environment

    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    record: dict[str, Any] = {"environment": environment(device), "settings": vars(args) | {"out": str(args.out)},
                              "runs": [], "inference": [], "largest_batch": {}}
    generator = torch.Generator(device=device).manual_seed(0)
    for mode in args.modes.split(","):
        amp = "bf16" if mode.startswith("bf16") else None
        channels_last = mode.endswith("-cl")
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        bank = torch.randn(args.bank, 3, args.size, args.size, device=device, generator=generator)
        bank = bank.contiguous(memory_format=fmt)
        for method in args.methods.split(","):
            model = build(args.model, method, args.classes).to(device).eval().to(memory_format=fmt)
            batches = [int(b) for b in args.batches.split(",") if b != "max"]
            if "max" in args.batches.split(",") and amp == "bf16":
                top = largest_batch(model, method, bank, 256 if not args.dry_run else 2, args.cap, amp)
                record["largest_batch"][f"{method}/{mode}"] = top
                print(f"scale: largest batch {method} {mode}: {top}", flush=True)
                batches.append(top)
            for batch in batches:
                with tempfile.TemporaryDirectory(prefix="fastcam-scale-") as work:
                    row = run_one(model, method, bank, args.images, batch, amp, device, Path(work)) | {"mode": mode}
                record["runs"].append(row)
                print(f"scale: {method:8s} {mode:8s} batch {batch:5d}: {row['images_per_s']:9.1f} img/s, "
                      f"store {100 * row['store_fraction']:4.1f}%, GPU busy {row['gpu_util_mean']}%, "
                      f"peak {row['peak_gib']} GiB, 50k images in {row['extrapolated_50k_s']} s", flush=True)
            if method == "gradcam":  # the reference: the same network's plain inference, same batches
                for batch in batches:
                    rate = inference_rate(model, bank, batch, args.images, amp)
                    record["inference"].append({"mode": mode, "batch": batch, "images_per_s": round(rate, 1)})
                    print(f"scale: inference {mode:8s} batch {batch:5d}: {rate:9.1f} img/s", flush=True)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main()

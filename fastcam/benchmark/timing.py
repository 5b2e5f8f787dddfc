"""Timing calls: the one timer of fastcam's benchmarks (`fastcam bench` and every script in bench/).

Each timed call is synchronised with the device: on CUDA an event pair around the call (optionally after
flushing the L2 cache, for kernels whose inputs would otherwise stay cached), on the CPU
`time.perf_counter`; the process CPU time of the call is recorded too. `time_interleaved` times several
contenders in rotating rounds, so that any drift of the machine's load hits them alike.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

#: the buffer zeroed before each call with `flush_l2=True`: larger than any GPU's L2 (H100/H200: 50 MiB)
_FLUSH_BYTES = 256 * 2**20


@dataclass
class Timing:
    """Seconds per timed call (`times_s`, the wall clock the device saw), their summary, and the process
    CPU seconds of each call (`cpu_times_s`; empty where not measured)."""

    times_s: list[float]
    median_s: float
    q1_s: float
    q3_s: float
    min_s: float
    max_s: float
    cpu_times_s: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, times: Sequence[float], cpu_times: Sequence[float] = ()) -> "Timing":
        arr = np.asarray(times, dtype=np.float64)
        return cls(times_s=[float(t) for t in arr], median_s=float(np.median(arr)),
                   q1_s=float(np.percentile(arr, 25)), q3_s=float(np.percentile(arr, 75)),
                   min_s=float(arr.min()), max_s=float(arr.max()), cpu_times_s=[float(t) for t in cpu_times])

    @property
    def cpu_median_s(self) -> float | None:
        """The median process CPU seconds of a call (None where not measured)."""
        return float(np.median(self.cpu_times_s)) if self.cpu_times_s else None


class _Clock:
    """Times one call at a time on `device` (see the module docstring)."""

    def __init__(self, device: torch.device, flush_l2: bool) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.flush = (torch.empty(_FLUSH_BYTES // 4, dtype=torch.int32, device=device)
                      if flush_l2 and self.cuda else None)

    def __call__(self, fn: Callable[[], Any]) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) of one call of `fn`."""
        if self.cuda:
            if self.flush is not None:
                self.flush.zero_()  # evict the previous call's data from L2 (outside the timed interval)
            torch.cuda.synchronize(self.device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            cpu = time.process_time()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(self.device)
            return start.elapsed_time(end) / 1000.0, time.process_time() - cpu
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - wall, time.process_time() - cpu


def _check(warmup: int, repeats: int) -> None:
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")


def time_callable(fn: Callable[[], Any], device: torch.device, *, warmup: int, repeats: int,
                  flush_l2: bool = False) -> Timing:
    """Warm up `warmup` times, then time `repeats` calls, each synchronised (`flush_l2`: CUDA only, the L2
    cache is flushed before each timed call).

    CUDA: an event pair around each call, read after `torch.cuda.synchronize()` (kernels launched by the
    call are all inside its interval). CPU: `time.perf_counter` around the call.
    """
    _check(warmup, repeats)
    for _ in range(warmup):
        fn()
    clock = _Clock(device, flush_l2)
    wall, cpu = zip(*(clock(fn) for _ in range(repeats)))
    return Timing.of(wall, cpu)


def time_interleaved(calls: Mapping[str, Callable[[], Any]], device: torch.device, *, warmup: int, repeats: int,
                     flush_l2: bool = False) -> dict[str, Timing]:
    """Each of `calls` warmed up `warmup` times, then `repeats` rounds of one timed call each, round r
    starting at contender r (mod n): the load of a busy spell is spread over all of them alike."""
    _check(warmup, repeats)
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    clock = _Clock(device, flush_l2)
    measured: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            measured[name].append(clock(calls[name]))
    return {name: Timing.of(*zip(*measured[name])) for name in names}


def copy_bandwidth(device: torch.device, mib: int, *, warmup: int, repeats: int) -> dict[str, float]:
    """The device's practical peak bandwidth: a large device-to-device copy, (read + write) bytes / median
    time (L2 flushed before each copy)."""
    src = torch.empty(mib * 2**20 // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = time_callable(lambda: dst.copy_(src), device, warmup=warmup, repeats=repeats, flush_l2=True).median_s * 1e3
    moved = 2 * src.numel() * src.element_size()
    return {"copy_bytes": moved, "copy_ms": ms, "peak_gbps": moved / ms / 1e6}

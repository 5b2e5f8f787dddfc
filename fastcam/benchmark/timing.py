"""Timing calls: seconds per call, synchronised with the device, and their summary statistics.

On CUDA each call is timed with CUDA events after a synchronisation; on CPU with `time.perf_counter`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch


@dataclass
class Timing:
    """Seconds per batch of `repeats` timed calls, and their summary."""

    times_s: list[float]
    median_s: float
    q1_s: float
    q3_s: float
    min_s: float
    max_s: float

    @classmethod
    def of(cls, times: Sequence[float]) -> "Timing":
        arr = np.asarray(times, dtype=np.float64)
        return cls(times_s=[float(t) for t in arr], median_s=float(np.median(arr)),
                   q1_s=float(np.percentile(arr, 25)), q3_s=float(np.percentile(arr, 75)),
                   min_s=float(arr.min()), max_s=float(arr.max()))


def time_callable(fn: Callable[[], Any], device: torch.device, *, warmup: int, repeats: int) -> Timing:
    """Warm up `warmup` times, then time `repeats` calls, each synchronised.

    CUDA: an event pair around each call, read after `torch.cuda.synchronize()` (kernels launched by the
    call are all inside its interval). CPU: `time.perf_counter` around the call.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return Timing.of(times)

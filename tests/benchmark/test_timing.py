"""Timing statistics and synchronised timed calls."""
from __future__ import annotations

import time

import pytest
import torch

from fastcam import benchmark
from fastcam.benchmark import Timing


def test_timing_statistics() -> None:
    t = Timing.of([0.4, 0.1, 0.3, 0.2, 10.0])
    assert (t.median_s, t.min_s, t.max_s) == (0.3, 0.1, 10.0)
    assert (t.q1_s, t.q3_s) == pytest.approx((0.2, 0.4))
    calls = []
    timing = benchmark.time_callable(lambda: (calls.append(1), time.sleep(0.01)), torch.device("cpu"),
                                     warmup=2, repeats=3)
    assert len(calls) == 5 and len(timing.times_s) == 3
    assert all(0.009 < s < 1.0 for s in timing.times_s)
    with pytest.raises(ValueError, match="repeats"):
        benchmark.time_callable(lambda: None, torch.device("cpu"), warmup=0, repeats=0)


def test_interleaved_rounds_rotate_and_record_cpu_time() -> None:
    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    timed = benchmark.timing.time_interleaved(calls, torch.device("cpu"), warmup=1, repeats=3)
    assert order[:3] == ["a", "b", "c"]  # the warm-up
    assert order[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # round r starts at contender r
    assert all(len(t.times_s) == len(t.cpu_times_s) == 3 and t.cpu_median_s is not None for t in timed.values())
    spin = benchmark.time_callable(lambda: sum(range(200_000)), torch.device("cpu"), warmup=0, repeats=2)
    assert all(c > 0 for c in spin.cpu_times_s)
    with pytest.raises(ValueError, match="repeats"):
        benchmark.timing.time_interleaved(calls, torch.device("cpu"), warmup=0, repeats=0)

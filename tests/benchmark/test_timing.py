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

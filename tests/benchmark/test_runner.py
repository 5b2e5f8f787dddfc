"""run_benchmark: bad configurations are refused, max_time caps slow contenders."""
from __future__ import annotations

import pytest
import torch

from fastcam import benchmark
from fastcam.benchmark import BenchConfig


def test_bench_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown contenders"):
        benchmark.run_benchmark(BenchConfig(model="fastcam:tiny_resnet", size=32, batch=1, device="cpu",
                                            contenders=("gradcam", "fastgradcam")), progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA GPU"):
            benchmark.run_benchmark(BenchConfig(model="fastcam:tiny_resnet", device="cuda"), progress=False)


def test_max_time_caps_slow_contenders_at_one_timed_call() -> None:
    config = BenchConfig(model="fastcam:tiny_resnet", size=32, batch=1, device="cpu", warmup=0, repeats=3,
                         contenders=("inference",), max_time=1e-9)
    report = benchmark.run_benchmark(config, progress=False)
    assert len(report.results[0].timing.times_s) == 1
    config.max_time = None
    assert len(benchmark.run_benchmark(config, progress=False).results[0].timing.times_s) == 3

"""One pytest-benchmark per contender of `fastcam bench` (see bench/conftest.py for how to run it).

Each contender is built from `fastcam.benchmark.build` (the same code `fastcam bench` times), called on
the session's batch with a CUDA synchronisation inside the timed call, and closed afterwards. The
images per call are recorded in `extra_info`, so images/s = images_per_call / mean.
"""
from __future__ import annotations

import pytest
import torch

from fastcam.benchmark import DEFAULT_CONTENDER_KEYS, Setting, Skip, build


@pytest.mark.parametrize("key", DEFAULT_CONTENDER_KEYS)  # SS-CAM / IS-CAM: too slow for rounds
def test_contender(benchmark, bench_setting: Setting, bench_rounds: int, key: str) -> None:  # noqa: ANN001
    try:
        run, close, note = build(key, bench_setting)
    except Skip as exc:
        pytest.skip(str(exc))
    device = bench_setting.images.device

    def call() -> None:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    benchmark.group = f"{bench_setting.config.model} {bench_setting.config.size}px batch {bench_setting.config.batch} {device}"
    benchmark.extra_info.update({"images_per_call": bench_setting.images.shape[0], "note": note})
    try:
        benchmark.pedantic(call, rounds=bench_rounds, warmup_rounds=1, iterations=1)
    finally:
        close()

"""The per-shape autotuning policy of fastcam.kernels (`fastcam.kernels._launch`), in the interpreter.

Off in the interpreter, under torch's deterministic mode and with FASTCAM_AUTOTUNE=0: the heuristic
configuration runs, untimed and uncached. On (forced here, with a fake timer that favours the last
candidate, so no kernel is timed and the choice is known): Triton's autotuner offers the heuristic first
and then the candidates that fit, times each once per shape, caches the winner per key, and the winner
computes the same result as the reference.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from fastcam.kernels import _launch, cam_combine  # noqa: E402
from fastcam_testkit.kernels import (  # noqa: E402
    INTERPRETER_TESTS,
    B,
    H,
    W,
    assert_close,
    combine_inputs,
    h,
    poisoned,
    w,
)
from fastcam.ops import combine as combine_reference  # noqa: E402
from fastcam.ops import weighted_sum_relu as weighted_sum_relu_reference  # noqa: E402

pytestmark = INTERPRETER_TESTS


def test_tuning_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _launch.interpreting() and not _launch.tuning_enabled()  # CI: the interpreter never tunes
    assert _launch.bench_timer(lambda: pytest.fail("ran a kernel"), (0.5, 0.2, 0.8)) == [0.0, 0.0, 0.0]
    monkeypatch.setattr(_launch, "interpreting", lambda: False)  # as on a GPU
    monkeypatch.delenv("FASTCAM_AUTOTUNE", raising=False)
    assert _launch.tuning_enabled()
    monkeypatch.setenv("FASTCAM_AUTOTUNE", "0")
    assert not _launch.tuning_enabled()
    monkeypatch.setenv("FASTCAM_AUTOTUNE", "1")
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert not _launch.tuning_enabled()  # bit-reproducible across processes: the heuristic always
    finally:
        torch.use_deterministic_algorithms(previous)


def test_pruner_offers_the_heuristic_first_then_what_fits() -> None:
    kernel = cam_combine._weighted_sum_kernel
    args = {"act_ptr": torch.empty(1), "C": 2048, "CHUNK": 2048, "HW": 49, "BLOCK_P": 64}
    interpreted = cam_combine._combine_config(args)  # one big tile: 16,384 // 64 channels
    assert interpreted.kwargs["BLOCK_C"] == 256
    assert kernel.early_config_prune(kernel.configs, {}, **args) == [interpreted]  # tuning off
    with _launch.plan_as_gpu():  # GPU blocks, tuning on
        heuristic = cam_combine._combine_config(args)
        offered = kernel.early_config_prune(kernel.configs, {}, **args)
        short = kernel.early_config_prune(kernel.configs, {}, **{**args, "CHUNK": 32})  # a 32-channel slice
        short_heuristic = cam_combine._combine_config({**args, "CHUNK": 32})
    assert heuristic.kwargs == {"BLOCK_C": 64, "STAGES": 3} and heuristic.num_warps == 4
    assert offered[0] == heuristic and set(offered) == set(kernel.configs) and len(offered) == len(kernel.configs)
    assert short[0] == short_heuristic and short_heuristic.kwargs["BLOCK_C"] == 32
    assert all(c.kwargs["BLOCK_C"] <= 32 for c in short) and 1 < len(short) < len(offered)


def test_tuned_choice_is_cached_per_shape_and_correct(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = cam_combine._weighted_sum_kernel
    timed: list[int] = []

    def fake_timer(kernel_call: object, quantiles: tuple[float, ...] | None = None) -> list[float]:
        timed.append(1)
        return [1000.0 - len(timed)] * 3  # each candidate "faster" than the one before: the last wins

    monkeypatch.setattr(_launch, "tuning_enabled", lambda: True)
    monkeypatch.setattr(_launch, "bench_timer", fake_timer)
    monkeypatch.setattr(kernel, "cache", {})
    activations, weights = combine_inputs(torch.float32, seed=41)
    lowres = cam_combine.weighted_sum_relu(activations, weights, out=poisoned(B, h, w))
    offered = len(timed)
    assert offered >= 2 and len(kernel.cache) == 1
    chosen = next(iter(kernel.cache.values()))
    assert chosen != cam_combine._combine_config({"act_ptr": activations, "C": 37, "CHUNK": 37, "HW": h * w})
    assert_close(lowres, weighted_sum_relu_reference(activations, weights))
    _, maps = cam_combine.combine(activations, weights, (H, W), maps_out=poisoned(B, H, W))  # same key: cached
    assert len(timed) == offered and len(kernel.cache) == 1
    assert_close(maps, combine_reference(activations, weights, (H, W))[1])
    cam_combine.weighted_sum_relu(activations[:, :, :, :-1], weights)  # another shape: tuned again
    assert len(timed) > offered and len(kernel.cache) == 2


def test_untuned_runs_the_heuristic_without_caching(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = cam_combine._weighted_sum_kernel
    monkeypatch.setattr(kernel, "cache", {})
    monkeypatch.setattr(_launch, "bench_timer", lambda *a, **k: pytest.fail("timed while tuning is off"))
    activations, weights = combine_inputs(torch.float32, seed=42)
    cam_combine.weighted_sum_relu(activations, weights)
    assert kernel.cache == {}
    assert kernel.best_config == cam_combine._combine_config({"act_ptr": activations, "C": 37, "CHUNK": 37, "HW": h * w})

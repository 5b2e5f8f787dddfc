"""Launch geometry shared by the Triton kernels: how many programs fill the GPU, when a channel reduction
is split across programs, and the per-shape autotuning policy.

**Filling the GPU.** The combine, CF-CAM and SoftCAM kernels reduce over channels. With one program per
(image, pixel tile) a ResNet-50 layer4 batch of 1-16 images (C = 2,048, h·w = 49: one tile) launches 1-16
programs on an H100's 132 SMs: most of the chip idles while each program streams its channels through one
SM. When the natural grid has fewer than `FILL_FACTOR` × SM-count programs, `channel_split` cuts the
channel range into `parts` contiguous slices of `chunk` channels; each slice becomes its own program and
writes a partial sum to a small (parts, ...) float32 workspace, which the consumer adds up in slice order
0, 1, ..., parts - 1. No atomics: the result is bit-identical from run to run (for a given SM count and
kernel configuration), and no host sync is needed (the split depends on shapes only).

**Autotuning.** The heavy kernels are wrapped by `shape_tuned`: Triton's `Autotuner` (what
`triton.autotune` builds), keyed on their shape arguments (Triton adds every tensor argument's dtype to the
key), with a small candidate list and an `early_config_prune` built by `pruner`: the heuristic
configuration (the block choices the kernels always used) comes first, then the candidates that fit the
shape. On a GPU each new shape is timed once by `bench_timer` (`triton.testing.do_bench`, shortened; host
syncs on that first call only) and the winner is cached per key for the process. When tuning is off the
heuristic configuration is launched directly, every call, without timing and without touching the cache:
in Triton's interpreter (CI: fast and deterministic), under `torch.use_deterministic_algorithms(True)` (the
reduction order then never depends on a timing race, so results are bit-reproducible across processes) and
with FASTCAM_AUTOTUNE=0. Capture a CUDA graph only after one call per shape (tuning times kernels, which
capture forbids), or with tuning off.
"""
from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import triton
from triton.runtime.autotuner import Autotuner

__all__ = [
    "FILL_FACTOR",
    "INTERPRETER_SMS",
    "ChannelSplit",
    "bench_timer",
    "channel_config",
    "channel_split",
    "config_dict",
    "gpu_geometry",
    "interpreting",
    "plan_as_gpu",
    "pruner",
    "shape_tuned",
    "sm_count",
    "tuning_enabled",
    "unsplit",
    "untuned",
    "workspace",
]

#: programs wanted per SM before a reduction is split: with one resident program per SM a streaming loop
#: keeps too few loads in flight; two per SM also absorbs the tail of uneven slices
FILL_FACTOR = 2
#: the SM count used where no GPU is queried (Triton's interpreter, compile checks): an H100 SXM's, so CI
#: takes the split decisions an H100 takes
INTERPRETER_SMS = 132
#: most slices a reduction is cut into (bounds the partial-sum workspace and the consumer's fold)
MAX_PARTS = 64

_ASSUME_GPU = False  # tooling only (`plan_as_gpu`): plan CPU tensors' launches as on a GPU
_SPLIT = True  # `unsplit()` turns the channel split off (benchmarks measure what it buys)


def interpreting() -> bool:
    """True when kernels run in Triton's interpreter (TRITON_INTERPRET=1, CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def gpu_geometry(tensor: torch.Tensor) -> bool:
    """Whether to use the GPU block shapes and configurations (CUDA tensors; CPU tensors under `plan_as_gpu`)."""
    return tensor.is_cuda or _ASSUME_GPU


@contextlib.contextmanager
def plan_as_gpu() -> Iterator[None]:
    """Plan launches of CPU tensors with the GPU's block shapes, `INTERPRETER_SMS` SMs and tuning on.

    For tooling that compiles the kernels for sm_90 without a GPU (bench/compile_sm90.py): it records the
    launches instead of running them. Never use it around real launches.
    """
    global _ASSUME_GPU
    previous, _ASSUME_GPU = _ASSUME_GPU, True
    try:
        yield
    finally:
        _ASSUME_GPU = previous


@contextlib.contextmanager
def unsplit() -> Iterator[None]:
    """Launch every reduction unsplit (one program per image / tile) inside the block: for benchmarks that
    time the split against the plain grid in one run."""
    global _SPLIT
    previous, _SPLIT = _SPLIT, False
    try:
        yield
    finally:
        _SPLIT = previous


@contextlib.contextmanager
def untuned() -> Iterator[None]:
    """Run the heuristic configurations inside the block (as FASTCAM_AUTOTUNE=0): for benchmarks."""
    previous = os.environ.get("FASTCAM_AUTOTUNE")
    os.environ["FASTCAM_AUTOTUNE"] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("FASTCAM_AUTOTUNE", None)
        else:
            os.environ["FASTCAM_AUTOTUNE"] = previous


@functools.lru_cache(maxsize=None)
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of the tensor's GPU (cached per device: no sync after the first query);
    `INTERPRETER_SMS` for CPU tensors."""
    if device.type == "cuda":
        return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return INTERPRETER_SMS


@dataclass(frozen=True)
class ChannelSplit:
    """`parts` slices of `chunk` consecutive channels (the last one shorter); parts == 1: no split."""

    parts: int
    chunk: int

    @property
    def split(self) -> bool:
        return self.parts > 1

    def as_dict(self) -> dict[str, int]:
        return {"parts": self.parts, "chunk": self.chunk}


def channel_split(programs: int, channels: int, sms: int, *, min_chunk: int, align: int) -> ChannelSplit:
    """How to cut a reduction over `channels` when the natural grid has `programs` programs.

    No split when the grid already has `FILL_FACTOR * sms` programs or the channels are too few to give two
    slices of `min_chunk`. Otherwise parts = ceil(FILL_FACTOR * sms / programs), capped by
    channels // min_chunk and `MAX_PARTS`; the slice length is rounded up to a multiple of `align` (the
    block size the kernels step by) and the part count recomputed from it, so no slice is empty.
    """
    target = FILL_FACTOR * sms
    if programs >= target or not _SPLIT:
        return ChannelSplit(1, channels)
    parts = min(triton.cdiv(target, max(programs, 1)), channels // max(min_chunk, 1), MAX_PARTS)
    if parts < 2:
        return ChannelSplit(1, channels)
    chunk = triton.cdiv(triton.cdiv(channels, parts), align) * align
    parts = triton.cdiv(channels, chunk)
    return ChannelSplit(parts, chunk) if parts > 1 else ChannelSplit(1, channels)


def workspace(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised partial-sum workspace (every element is written before it is read: the tests swap
    this for a NaN-filled allocation to prove it)."""
    return torch.empty(shape, dtype=dtype, device=device)


# ------------------------------------------------------------------------------------------- autotuning
def tuning_enabled() -> bool:
    """Time the candidate configurations of a new shape? Only on a real GPU run (or `plan_as_gpu`), not in
    the interpreter, not under torch's deterministic mode, not with FASTCAM_AUTOTUNE=0."""
    if _ASSUME_GPU:
        return True
    if interpreting() or torch.are_deterministic_algorithms_enabled():
        return False
    return os.environ.get("FASTCAM_AUTOTUNE", "1") not in ("0", "")


def bench_timer(kernel_call: Callable[[], Any], quantiles: tuple[float, ...] | None = None) -> list[float]:
    """The autotuner's timer: a short `triton.testing.do_bench` when tuning, else no timing at all (the
    pruner then offers the heuristic configuration alone, and nothing is run here)."""
    count = len(quantiles) if quantiles else 1
    if not tuning_enabled() or _ASSUME_GPU:
        return [0.0] * count
    timing = triton.testing.do_bench(kernel_call, warmup=5, rep=20, quantiles=quantiles)
    return list(timing) if isinstance(timing, (list, tuple)) else [float(timing)] * count


def pruner(
    heuristic: Callable[[dict[str, Any]], triton.Config],
    fits: Callable[[triton.Config, dict[str, Any]], bool],
) -> Callable[..., list[triton.Config]]:
    """An `early_config_prune`: [heuristic config, *the candidates that fit the shape] when tuning, else
    [heuristic config]. `heuristic` and `fits` see the launch's arguments by name (tensors, shapes and the
    caller's constexprs)."""

    def prune(configs: list[triton.Config], named_args: dict[str, Any], **kwargs: Any) -> list[triton.Config]:
        args = {**named_args, **kwargs}
        first = heuristic(args)
        if not tuning_enabled():
            return [first]
        return [first, *(c for c in configs if c != first and fits(c, args))]

    return prune


class ShapeTuner(Autotuner):
    """Triton's autotuner, except that with tuning off (`tuning_enabled`) it launches the heuristic
    configuration directly: no timing, no cache entry (so switching deterministic mode on later, or a test
    that changes the heuristic, always gets the heuristic)."""

    def __init__(self, fn: Any, heuristic: Callable[[dict[str, Any]], triton.Config], **kwargs: Any) -> None:
        super().__init__(fn, fn.arg_names, **kwargs)
        self.heuristic = heuristic

    def run(self, *args: Any, **kwargs: Any) -> Any:
        if tuning_enabled():
            return super().run(*args, **kwargs)
        config = self.heuristic({**dict(zip(self.arg_names, args)), **kwargs})
        self.best_config = config
        return self.fn.run(*args, **kwargs, **config.all_kwargs())

    def chosen_config(self, key: tuple[Any, ...] | None = None) -> triton.Config | None:
        """The configuration of the last launch (or the cached one for a tuning key)."""
        return self.cache.get(key) if key is not None else getattr(self, "best_config", None)


def channel_config(block_c: int, stages: int, warps: int) -> triton.Config:
    """A channel-loop configuration: BLOCK_C channels a step, a `tl.range` pipeline STAGES deep (the kernel's
    own num_stages too), `warps` warps."""
    return triton.Config({"BLOCK_C": block_c, "STAGES": stages}, num_warps=warps, num_stages=stages)


def config_dict(config: triton.Config | None) -> dict[str, Any] | None:
    """A configuration as plain data (for benchmark records)."""
    if config is None:
        return None
    return {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}


def shape_tuned(
    configs: list[triton.Config],
    key: list[str],
    heuristic: Callable[[dict[str, Any]], triton.Config],
    fits: Callable[[triton.Config, dict[str, Any]], bool],
) -> Callable[[Any], ShapeTuner]:
    """Decorator for a `@triton.jit` kernel: autotuned over `configs` (heuristic first, those that `fits`
    the shape next) per value of the `key` arguments when tuning, the heuristic configuration otherwise.
    `configs` must hold two or more candidates (Triton's autotuner skips tuning for a single one)."""
    if len(configs) < 2:
        raise ValueError("shape_tuned needs at least two candidate configurations")

    def decorate(fn: Any) -> ShapeTuner:
        return ShapeTuner(
            fn, heuristic, configs=configs, key=key, reset_to_zero=None, restore_value=None,
            prune_configs_by={"early_config_prune": pruner(heuristic, fits)},
            do_bench=lambda kernel_call, quantiles=None: bench_timer(kernel_call, quantiles),  # looked up per call
        )

    return decorate

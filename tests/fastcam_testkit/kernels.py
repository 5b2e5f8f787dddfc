"""Helpers for the kernel tests: odd sizes, poisoned outputs, tolerances, a float64 bilinear oracle.

Tolerances: float32 results must agree to 1e-5 relative, with an absolute floor of 1e-5 times the output's
largest magnitude (a channel sum with cancellation can end near zero, where a purely relative test is
meaningless). Half-precision inputs are cast to float32 after loading by both paths, so they are held to
the same bound against the reference, and to 1e-4 against float64 maths on the same half values.
"""
from __future__ import annotations

import pytest
import torch

from fastcam_testkit.common import gen

HALF = (torch.float16, torch.bfloat16)
DTYPES = (torch.float32, *HALF)
B, C, h, w, H, W = 3, 37, 5, 7, 33, 29  # odd, non-power-of-two sizes everywhere

# Triton 3.6's interpreter converts runtime loop bounds with a numpy call that numpy 2.3 deprecates (2.4
# removes it: hence numpy<2.4 in constraints.txt); the warning is the interpreter's, not ours.
INTERPRETER_WARNING = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")
#: these modules run the kernels on CPU tensors in Triton's interpreter; where a GPU is present the
#: interpreter is off and tests/kernels/test_gpu_kernels.py runs the compiled kernels instead
INTERPRETER_ONLY = pytest.mark.skipif(
    torch.cuda.is_available(), reason="interpreter tests on CPU tensors; on a GPU test_gpu_kernels.py runs the compiled kernels")
#: the marks of every interpreter-run kernel test module: `pytestmark = INTERPRETER_TESTS`
INTERPRETER_TESTS = [INTERPRETER_WARNING, INTERPRETER_ONLY]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert torch.isfinite(actual).all(), "non-finite values (an element left unwritten?)"
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-30))


def poisoned(*shape: int) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=torch.float32)


def bilinear_float64(lowres: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Independent oracle: align_corners=False bilinear upsampling + max-normalise, in float64 by hand."""
    x = lowres.double()
    in_h, in_w = x.shape[-2:]

    def axis(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp_min(0)
        i0 = src.floor().long().clamp_max(n_in - 1)
        i1 = (i0 + 1).clamp_max(n_in - 1)
        return i0, i1, (src - i0).clamp(0, 1)

    y0, y1, ly = axis(in_h, size[0])
    x0, x1, lx = axis(in_w, size[1])
    top = x[:, y0][:, :, x0] * (1 - lx) + x[:, y0][:, :, x1] * lx
    bottom = x[:, y1][:, :, x0] * (1 - lx) + x[:, y1][:, :, x1] * lx
    up = top * (1 - ly)[:, None] + bottom * ly[:, None]
    peak = up.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, up / torch.where(peak > 0, peak, 1), 0)


def combine_inputs(dtype: torch.dtype, seed: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Post-ReLU activations (B, C, h, w) and small weights (B, C) at the odd sizes above."""
    g = gen(seed)
    activations = torch.randn(B, C, h, w, generator=g).relu_().to(dtype)
    weights = torch.randn(B, C, generator=g) * 0.1
    return activations, weights


def spy(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    """Count calls of `module.name` (a kernel entry point), so a silent fall-back to torch fails a test."""
    calls: list[int] = []
    original = getattr(module, name)

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def force_split(monkeypatch: pytest.MonkeyPatch, chunk: int | None) -> list[tuple[int, int]]:
    """Make every kernel's channel reduction split into slices of `chunk` channels (an odd chunk leaves a
    ragged last slice), or never split (`chunk=None`), whatever the SM count; and make every partial-sum
    workspace start as NaN, so a slice left unwritten shows. Returns the (parts, chunk) choices made."""
    from fastcam.kernels import _launch

    chosen: list[tuple[int, int]] = []

    def split(programs: int, channels: int, sms: int, *, min_chunk: int, align: int) -> _launch.ChannelSplit:
        parts = 1 if chunk is None else -(-channels // chunk)
        choice = _launch.ChannelSplit(parts, chunk) if parts > 1 else _launch.ChannelSplit(1, channels)
        chosen.append((choice.parts, choice.chunk))
        return choice

    def nan_workspace(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(_launch, "channel_split", split)
    monkeypatch.setattr(_launch, "workspace", nan_workspace)
    return chosen

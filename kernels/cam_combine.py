r"""The shared CAM combine on Triton: weighted channel sum + ReLU, then upsample + per-image max-normalise.

$$ L_b(i, j) = \mathrm{ReLU}\Big(\sum_{c} w_{bc}\, A_{bc}(i, j)\Big), \qquad
   M_b = \frac{U(L_b)}{\max(\max U(L_b),\ \text{tiny})} $$

Serves Grad-CAM (w = mean gradient), Grad-CAM++ (alpha weights), Score-CAM (softmaxed scores): it is what
`fastcam._backend.op("combine", "triton")` returns.

Launch 1 (`_weighted_sum_relu_kernel`), grid (B, ceil(hw / BLOCK_P)): each program owns BLOCK_P spatial
positions of one image and walks the channels in BLOCK_C chunks, loading a (BLOCK_C, BLOCK_P) tile of A in
its own dtype, casting to float32 and reducing it against the weights with a float32 accumulator
(float64 for float64 input, as the reference). No `tl.dot`: this is a memory-bound GEMV per image, and
bf16 `tl.dot` is wrong in the interpreter. The channel sum is never split across programs, so results are deterministic (no atomics). Strides are passed
through, so NCHW, channels_last and sliced views are read in place; Triton specialises a unit stride,
so whichever of the channel or spatial axis is contiguous is the coalesced one.
Launch 2: `fastcam.kernels.upsample_normalize` (one program per image, output written once).

Torch references: `fastcam.ops.weighted_sum_relu`, `fastcam.ops.upsample_normalize` and `fastcam.ops.combine`
(re-exported here as `*_reference`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from fastcam.kernels.upsample_normalize import launch_guard, upsample_normalize
from fastcam.ops import combine as combine_reference
from fastcam.ops import weighted_sum_relu as weighted_sum_relu_reference
from fastcam.ops._checks import FLOAT_DTYPES, check_activations, check_size

__all__ = ["combine", "combine_reference", "weighted_sum_relu", "weighted_sum_relu_reference"]


@triton.jit
def _weighted_sum_relu_kernel(
    act_ptr,
    weight_ptr,
    low_ptr,
    C,
    HW,
    W,
    stride_ab,
    stride_ac,
    stride_ah,
    stride_aw,
    stride_wb,
    stride_wc,
    stride_lb,
    stride_lh,
    stride_lw,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    ACC: tl.constexpr,
    FLAT: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    pos = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    pos_mask = pos < HW
    row = pos // W
    col = pos % W
    if FLAT:  # stride_ah == W * stride_aw: a linear offset lets Triton see contiguity (NCHW: stride 1)
        spatial = (pos.to(tl.int64) * stride_aw)[None, :]
    else:
        spatial = (row.to(tl.int64) * stride_ah + col.to(tl.int64) * stride_aw)[None, :]
    act = act_ptr + b * stride_ab
    weight = weight_ptr + b * stride_wb
    offs_c = tl.arange(0, BLOCK_C)
    acc = tl.full((BLOCK_P,), 0, ACC)
    for c_start in range(0, C, BLOCK_C):
        chan = c_start + offs_c
        chan_mask = chan < C
        wts = tl.load(weight + chan * stride_wc, mask=chan_mask, other=0.0).to(ACC)
        tile = tl.load(
            act + (chan.to(tl.int64) * stride_ac)[:, None] + spatial,
            mask=chan_mask[:, None] & pos_mask[None, :],
            other=0.0,
        ).to(ACC)
        acc += tl.sum(tile * wts[:, None], axis=0)
    acc = tl.maximum(acc, 0.0)
    tl.store(low_ptr + b * stride_lb + row * stride_lh + col * stride_lw, acc.to(tl.float32), mask=pos_mask)


def _check_out(out: Tensor | None, shape: tuple[int, ...], device: torch.device, name: str) -> Tensor:
    if out is None:
        return torch.empty(shape, dtype=torch.float32, device=device)
    if not isinstance(out, Tensor) or tuple(out.shape) != shape or out.dtype != torch.float32:
        got = f"{tuple(out.shape)} {out.dtype}" if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{name} must be a {shape} float32 tensor, got {got}")
    if out.device != device:
        raise ValueError(f"{name} is on {out.device} but the activations are on {device}")
    return out


def _reduction_blocks(channels: int, positions: int, on_gpu: bool) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_P, num_warps): 4,096-element (16 KB float32) tiles on GPU, positions first (whole
    7x7 / 16x16 maps in one or a few programs); in the interpreter one big tile so that a CI-sized problem
    is a single program step."""
    block_p = triton.next_power_of_2(positions)
    if on_gpu:
        block_p = min(block_p, 64)
        block_c = min(triton.next_power_of_2(channels), max(16, 4096 // block_p))
        return block_c, block_p, 4
    block_p = min(block_p, 1024)
    block_c = min(triton.next_power_of_2(channels), max(1, 16384 // block_p))
    return block_c, block_p, 4


def weighted_sum_relu(activations: Tensor, weights: Tensor, *, out: Tensor | None = None) -> Tensor:
    r"""$\mathrm{ReLU}(\sum_c w_{bc} A_{bc})$ -> (B, h, w) float32, accumulated in float32.

    Args:
        activations: (B, C, h, w) float32/float16/bfloat16/float64, any strides (channels_last, sliced views).
        weights: (B, C) float weights (float32 expected), any strides.
        out: optional (B, h, w) float32 buffer on the same device, overwritten entirely.
    """
    check_activations(activations, dims=(4,))
    batch, channels, height, width = activations.shape
    if not isinstance(weights, Tensor):
        raise TypeError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
    if weights.shape != (batch, channels):
        raise ValueError(f"weights must be (B, C) = ({batch}, {channels}), got {tuple(weights.shape)}")
    if weights.dtype not in FLOAT_DTYPES:
        raise TypeError(f"weights must be a float tensor, got {weights.dtype}")
    if weights.device != activations.device:
        raise ValueError(f"weights are on {weights.device} but the activations are on {activations.device}")
    out = _check_out(out, (batch, height, width), activations.device, "out")
    if batch == 0:
        return out
    block_c, block_p, warps = _reduction_blocks(channels, height * width, activations.is_cuda)
    grid = (batch, triton.cdiv(height * width, block_p))
    with launch_guard(activations):
        _weighted_sum_relu_kernel[grid](
            activations,
            weights,
            out,
            channels,
            height * width,
            width,
            *activations.stride(),
            *weights.stride(),
            *out.stride(),
            BLOCK_C=block_c,
            BLOCK_P=block_p,
            ACC=tl.float64 if torch.float64 in (activations.dtype, weights.dtype) else tl.float32,
            # NCHW and channels_last both store (h, w) as one strided run: address it linearly
            FLAT=height == 1 or activations.stride(2) == width * activations.stride(3),
            num_warps=warps,
        )
    return out


def combine(
    activations: Tensor,
    weights: Tensor,
    size: Sequence[int],
    *,
    lowres_out: Tensor | None = None,
    maps_out: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Weighted sum + ReLU + bilinear upsample to `size` + per-image max-normalise, in two launches.

    Args:
        activations: (B, C, h, w) float32/float16/bfloat16/float64, any strides.
        weights: (B, C) float32.
        size: output (H, W).
        lowres_out, maps_out: optional float32 buffers (B, h, w) and (B, H, W), overwritten entirely.

    Returns:
        (lowres (B, h, w), maps (B, H, W)), both float32, maps in [0, 1].
    """
    height, width = check_size(size)
    lowres = weighted_sum_relu(activations, weights, out=lowres_out)
    maps = upsample_normalize(lowres, (height, width), out=maps_out)
    return lowres, maps

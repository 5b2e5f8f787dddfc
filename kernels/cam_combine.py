r"""The shared CAM combine on Triton: weighted channel sum + ReLU, then upsample + per-image max-normalise.

$$ L_b(i, j) = \mathrm{ReLU}\Big(\sum_{c} w_{bc}\, A_{bc}(i, j)\Big), \qquad
   M_b = \frac{U(L_b)}{\max(\max U(L_b),\ \text{tiny})} $$

Serves Grad-CAM (w = mean gradient), Grad-CAM++ (alpha weights), Score-CAM (softmaxed scores): it is what
`fastcam._backend.op("combine", "triton")` returns.

Launch 1 (`_weighted_sum_kernel`), grid (B, ceil(hw / BLOCK_P), parts): program (b, t, s) owns BLOCK_P
spatial positions of image b and walks channel slice s in BLOCK_C chunks, loading a (BLOCK_C, BLOCK_P) tile
of A in its own dtype, casting to float32 and reducing it against the weights with a float32 accumulator
(float64 for float64 input, as the reference). No `tl.dot`: this is a memory-bound GEMV per image, and
bf16 `tl.dot` is wrong in the interpreter. The channel loop is a `tl.range(..., num_stages=STAGES)`: on a
GPU, STAGES tiles are in flight while the oldest is reduced. Strides are passed through, so NCHW,
channels_last and sliced views are read in place; Triton specialises a unit stride, so whichever of the
channel or spatial axis is contiguous is the coalesced one.

Why the slices: at ResNet-50 layer4 (C = 2,048, hw = 49: one tile) a batch of 1-16 images is 1-16
programs on an H100's 132 SMs, each streaming 400 KB through one SM. When B·tiles < 2 × SM count (queried
from the device; 132 in the interpreter) `plan` cuts the channels into `parts` slices of >= 32 channels
(`fastcam.kernels._launch.channel_split`): B = 1 -> 64 programs, B = 8 -> 256, B = 64 -> 320 (5 slices),
B >= 264 -> no split. Each slice writes its raw sum to a (parts, B, hw) workspace (a few KB; float32, or
float64 for float64 input) and the consumer adds the slices in slice order, then applies the ReLU:
deterministic, no atomics, no host sync. Without a split (parts = 1) the kernel stores ReLU(sum) directly.
Launch 2: `fastcam.kernels.upsample_normalize` (one program per image, output written once); with a split
it first folds the partial sums into lowres (prologue), so `combine` stays two launches either way.
(`weighted_sum_relu` alone folds them with `_fold_partials_kernel`.)

Configuration: BLOCK_P fixes the grid (heuristic `_reduction_blocks`); BLOCK_C, num_warps and the pipeline
depth are autotuned per (C, slice length, hw, strides, dtypes) on a GPU, with the heuristic
configuration first and used alone in the interpreter (`fastcam.kernels._launch`).

Torch references (the tests' oracles, imported from `fastcam.ops`): `fastcam.ops.weighted_sum_relu`,
`fastcam.ops.upsample_normalize` and `fastcam.ops.combine`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from fastcam.kernels import _launch
from fastcam.kernels._launch import ChannelSplit, channel_config, gpu_geometry, shape_tuned
from fastcam.kernels.upsample_normalize import fold_partials, launch_guard, launch_upsample_normalize
from fastcam.ops._checks import FLOAT_DTYPES, check_activations, check_size

__all__ = ["CombinePlan", "combine", "plan", "weighted_sum_relu"]


def _combine_config(args: dict[str, Any]) -> triton.Config:
    """The heuristic configuration (`_reduction_blocks`' channel block, 3-stage channel loop)."""
    channels = min(args["C"], args["CHUNK"])
    block_c, _, warps = _reduction_blocks(channels, args["HW"], gpu_geometry(args["act_ptr"]))
    return channel_config(block_c, 3, warps)


def _combine_fits(config: triton.Config, args: dict[str, Any]) -> bool:
    """A candidate fits when its channel block does not exceed the channels a program walks (rounded up to a
    power of two) and its tile stays within 8,192 elements (32 KiB of float32 per pipeline stage)."""
    block_c = config.kwargs["BLOCK_C"]
    walk = triton.next_power_of_2(min(args["C"], args["CHUNK"]))
    return block_c <= max(16, walk) and block_c * args["BLOCK_P"] <= 8192


#: GPU candidates for the channel loop (BLOCK_P is fixed by the grid): a small block with a deep pipeline
#: for short slices, wider blocks for long channel walks (8 warps for the 8,192-element tile). Four, so
#: that a new shape compiles at most four variants (about 0.6 s each) before it is timed.
_COMBINE_CONFIGS = [
    channel_config(16, 4, 4),
    channel_config(32, 3, 4),
    channel_config(64, 3, 4),
    channel_config(128, 2, 8),
]


@shape_tuned(
    _COMBINE_CONFIGS,
    key=["C", "CHUNK", "HW", "stride_ac", "stride_aw"],
    heuristic=lambda args: _combine_config(args),  # looked up per call (tests swap `_reduction_blocks`)
    fits=lambda config, args: _combine_fits(config, args),
)
@triton.jit
def _weighted_sum_kernel(
    act_ptr,
    weight_ptr,
    dst_ptr,
    C,
    CHUNK,
    HW,
    W,
    stride_ab,
    stride_ac,
    stride_ah,
    stride_aw,
    stride_wb,
    stride_wc,
    stride_ds,
    stride_db,
    stride_dh,
    stride_dw,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    STAGES: tl.constexpr,
    ACC: tl.constexpr,
    FLAT: tl.constexpr,
    PARTIAL: tl.constexpr,
):
    """Program (b, tile, s): sum_{c in slice s} w[b, c] A[b, c, p] over BLOCK_P positions p of image b.

    PARTIAL: store the raw sum (dtype of dst) at dst[s, b, p] (a (parts, B, HW) workspace; the consumer
    adds the slices in order and applies the ReLU); otherwise (one slice) store ReLU(sum) as float32 at
    dst[b, row, col].
    """
    b = tl.program_id(0).to(tl.int64)
    pos = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    part = tl.program_id(2)
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
    c_begin = part * CHUNK
    c_end = tl.minimum(c_begin + CHUNK, C)
    acc = tl.full((BLOCK_P,), 0, ACC)
    # software-pipelined on a GPU: STAGES channel tiles in flight while the oldest is reduced
    for c_start in tl.range(c_begin, c_end, BLOCK_C, num_stages=STAGES):
        chan = c_start + offs_c
        chan_mask = chan < c_end
        wts = tl.load(weight + chan * stride_wc, mask=chan_mask, other=0.0).to(ACC)
        tile = tl.load(
            act + (chan.to(tl.int64) * stride_ac)[:, None] + spatial,
            mask=chan_mask[:, None] & pos_mask[None, :],
            other=0.0,
        ).to(ACC)
        acc += tl.sum(tile * wts[:, None], axis=0)
    if PARTIAL:
        tl.store(dst_ptr + part.to(tl.int64) * stride_ds + b * stride_db + pos, acc.to(dst_ptr.dtype.element_ty),
                 mask=pos_mask)
    else:
        acc = tl.maximum(acc, 0.0)
        tl.store(dst_ptr + b * stride_db + row * stride_dh + col * stride_dw, acc.to(tl.float32), mask=pos_mask)


@triton.jit
def _fold_partials_kernel(
    part_ptr,
    low_ptr,
    HW,
    W,
    PARTS,
    stride_ps,
    stride_pb,
    stride_lb,
    stride_lh,
    stride_lw,
    BLOCK: tl.constexpr,
):
    """lowres[b, p] = ReLU(sum over slices s = 0, 1, ... of partial[s, b, p]) for BLOCK positions p: the
    standalone `weighted_sum_relu`'s second pass when the channels were split (`combine` does this fold
    inside the upsample-normalise kernel instead)."""
    b = tl.program_id(0).to(tl.int64)
    pos = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = pos < HW
    value = fold_partials(part_ptr, stride_ps, stride_pb, b, pos, mask, PARTS)
    tl.store(low_ptr + b * stride_lb + (pos // W) * stride_lh + (pos % W) * stride_lw, value, mask=mask)


def _reduction_blocks(channels: int, positions: int, on_gpu: bool) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_P, num_warps): 4,096-element (16 KB float32) tiles on GPU, positions first (whole
    7x7 / 16x16 maps in one or a few programs); in the interpreter one big tile so that a CI-sized problem
    is a single program step. BLOCK_P fixes the grid; BLOCK_C and num_warps are the heuristic (first)
    autotuning configuration."""
    block_p = triton.next_power_of_2(positions)
    if on_gpu:
        block_p = min(block_p, 64)
        block_c = min(triton.next_power_of_2(channels), max(16, 4096 // block_p))
        return block_c, block_p, 4
    block_p = min(block_p, 1024)
    block_c = min(triton.next_power_of_2(channels), max(1, 16384 // block_p))
    return block_c, block_p, 4


#: a slice of the channel reduction walks at least this many channels (32 x 64 positions: 8 KB of float32
#: per program), in multiples of `_SPLIT_ALIGN` (a whole number of 16- and 32-channel blocks)
_MIN_CHUNK = 32
_SPLIT_ALIGN = 32


@dataclass(frozen=True)
class CombinePlan:
    """Launch geometry of the weighted sum: grid (B, tiles, split.parts), BLOCK_P positions per tile."""

    batch: int
    block_p: int
    tiles: int
    split: ChannelSplit

    @property
    def grid(self) -> tuple[int, int, int]:
        return (self.batch, self.tiles, self.split.parts)

    def as_dict(self) -> dict[str, Any]:
        return {"grid": list(self.grid), "block_p": self.block_p, **self.split.as_dict()}


def plan(activations: Tensor) -> CombinePlan:
    """The weighted sum's grid for (B, C, h, w) activations: (B, ceil(hw / BLOCK_P)) programs, and when that
    is under 2x the SM count the channels split into slices (`fastcam.kernels._launch.channel_split`)."""
    batch, channels, height, width = activations.shape
    _, block_p, _ = _reduction_blocks(channels, height * width, gpu_geometry(activations))
    tiles = triton.cdiv(height * width, block_p)
    split = _launch.channel_split(
        batch * tiles, channels, _launch.sm_count(activations.device), min_chunk=_MIN_CHUNK, align=_SPLIT_ALIGN
    )
    return CombinePlan(batch, block_p, tiles, split)


def _check_out(out: Tensor | None, shape: tuple[int, ...], device: torch.device, name: str) -> Tensor:
    if out is None:
        return torch.empty(shape, dtype=torch.float32, device=device)
    if not isinstance(out, Tensor) or tuple(out.shape) != shape or out.dtype != torch.float32:
        got = f"{tuple(out.shape)} {out.dtype}" if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{name} must be a {shape} float32 tensor, got {got}")
    if out.device != device:
        raise ValueError(f"{name} is on {out.device} but the activations are on {device}")
    return out


def _check_weights(activations: Tensor, weights: Tensor) -> None:
    check_activations(activations, dims=(4,))
    batch, channels = activations.shape[:2]
    if not isinstance(weights, Tensor):
        raise TypeError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
    if weights.shape != (batch, channels):
        raise ValueError(f"weights must be (B, C) = ({batch}, {channels}), got {tuple(weights.shape)}")
    if weights.dtype not in FLOAT_DTYPES:
        raise TypeError(f"weights must be a float tensor, got {weights.dtype}")
    if weights.device != activations.device:
        raise ValueError(f"weights are on {weights.device} but the activations are on {activations.device}")


def _launch_weighted_sum(activations: Tensor, weights: Tensor, lowres: Tensor) -> Tensor | None:
    """Launch the weighted sum (B > 0). Unsplit: ReLU(sum) lands in `lowres`, returns None. Split: returns
    the (parts, B, h·w) partial sums (float32; float64 for float64 input), still to be folded into lowres."""
    batch, channels, height, width = activations.shape
    geometry = plan(activations)
    acc_dtype = torch.float64 if torch.float64 in (activations.dtype, weights.dtype) else torch.float32
    partials = None
    if geometry.split.split:
        partials = _launch.workspace((geometry.split.parts, batch, height * width), acc_dtype, activations.device)
        dst, dst_strides = partials, (partials.stride(0), partials.stride(1), 0, 0)
    else:
        dst, dst_strides = lowres, (0, *lowres.stride())
    with launch_guard(activations):
        _weighted_sum_kernel[geometry.grid](
            activations,
            weights,
            dst,
            channels,
            geometry.split.chunk,
            height * width,
            width,
            *activations.stride(),
            *weights.stride(),
            *dst_strides,
            BLOCK_P=geometry.block_p,
            ACC=tl.float64 if acc_dtype == torch.float64 else tl.float32,
            # NCHW and channels_last both store (h, w) as one strided run: address it linearly
            FLAT=height == 1 or activations.stride(2) == width * activations.stride(3),
            PARTIAL=partials is not None,
        )
    return partials


def weighted_sum_relu(activations: Tensor, weights: Tensor, *, out: Tensor | None = None) -> Tensor:
    r"""$\mathrm{ReLU}(\sum_c w_{bc} A_{bc})$ -> (B, h, w) float32, accumulated in float32.

    One launch, or two when the channels are split (the partial sums are then added by a small fold
    kernel; `combine` folds them inside its upsample launch instead).

    Args:
        activations: (B, C, h, w) float32/float16/bfloat16/float64, any strides (channels_last, sliced views).
        weights: (B, C) float weights (float32 expected), any strides.
        out: optional (B, h, w) float32 buffer on the same device, overwritten entirely.
    """
    _check_weights(activations, weights)
    batch, _, height, width = activations.shape
    out = _check_out(out, (batch, height, width), activations.device, "out")
    if batch == 0:
        return out
    partials = _launch_weighted_sum(activations, weights, out)
    if partials is not None:
        block = min(triton.next_power_of_2(height * width), 1024)
        with launch_guard(activations):
            _fold_partials_kernel[(batch, triton.cdiv(height * width, block))](
                partials, out, height * width, width, partials.shape[0], partials.stride(0), partials.stride(1),
                *out.stride(), BLOCK=block,
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
    """Weighted sum + ReLU + bilinear upsample to `size` + per-image max-normalise, in two launches (also
    when the channel sum is split: the upsample launch folds the partial sums).

    Args:
        activations: (B, C, h, w) float32/float16/bfloat16/float64, any strides.
        weights: (B, C) float32.
        size: output (H, W).
        lowres_out, maps_out: optional float32 buffers (B, h, w) and (B, H, W), overwritten entirely.

    Returns:
        (lowres (B, h, w), maps (B, H, W)), both float32, maps in [0, 1].
    """
    height, width = check_size(size)
    _check_weights(activations, weights)
    batch, _, low_h, low_w = activations.shape
    lowres = _check_out(lowres_out, (batch, low_h, low_w), activations.device, "lowres_out")
    maps = _check_out(maps_out, (batch, height, width), activations.device, "maps_out")
    if batch == 0:
        return lowres, maps
    partials = _launch_weighted_sum(activations, weights, lowres)
    launch_upsample_normalize(lowres, maps, partials)
    return lowres, maps

r"""Fused bilinear upsampling + per-image max-normalisation of non-negative low-resolution maps.

For each image b, with $U$ PyTorch's bilinear upsampling (``align_corners=False``) from (h, w) to (H, W):

$$ M_b = \frac{U(L_b)}{\max\big(\max_{y,x} U(L_b)(y, x),\ \text{tiny}\big)} $$

so an all-zero map stays zero (tiny = smallest normal float32: no division by zero, no NaN).
Source coordinates follow PyTorch exactly: with $s = h / H$ (in float32),
$y_{src} = \max(s\,(y + \tfrac12) - \tfrac12,\ 0)$, $y_0 = \lfloor y_{src} \rfloor$,
$y_1 = \min(y_0 + 1, h - 1)$, $\lambda_y = y_{src} - y_0$; the same along x.

One program per image (grid (B,)); it walks the output in (BLOCK_H, BLOCK_W) tiles twice: the first pass finds the
upsampled map's max, the second recomputes each tile and stores it divided by that max. Recomputing from
the tiny low-resolution map (it stays in L1/L2) is cheaper than writing the unnormalised map and reading it
back, so the (B, H, W) output crosses memory exactly once, in one launch, with no atomics and no host sync.
Row/column indices and weights are computed once per tile row/column (the interpolation is separable).

With `partials` (from `fastcam.kernels.cam_combine` when its channel sum was split across programs), a
prologue first folds the (parts, B, h·w) partial sums into the low-resolution map (slice order, ReLU),
stores it, and synchronises the program: the split costs no extra launch. The grid stays one program per
image even at small batches: splitting the output across programs would need the image's max first, i.e.
either a second launch or every program recomputing the whole upsampled map (as much work again as the
writes it would parallelise); the max of the upsampled map cannot be taken from a few sample points
bit-exactly (rounding), and the normalised peak must be exactly 1.

Torch reference: `fastcam.ops.upsample_normalize`. SoftCAM's explanation maps reuse `upsample_normalize` from this module.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from fastcam.kernels._launch import gpu_geometry
from fastcam.ops._checks import check_size

__all__ = [
    "check_size",
    "fold_partials",
    "launch_guard",
    "launch_upsample_normalize",
    "upsample_normalize",
]

_TINY = torch.finfo(torch.float32).tiny


@triton.jit
def fold_partials(part_ptr, stride_ps, stride_pb, b, pos, mask, PARTS):
    """ReLU(sum_s partial[s, b, pos]) as float32, over the slices of a split channel reduction
    (`fastcam.kernels._launch.channel_split`), added in slice order 0, 1, ..., PARTS - 1 in the
    workspace's dtype: the same order in every consumer, so results are bit-identical."""
    ptrs = part_ptr + b * stride_pb + pos
    acc = tl.load(ptrs, mask=mask, other=0.0)
    for s in range(1, PARTS):
        acc += tl.load(ptrs + s * stride_ps, mask=mask, other=0.0)
    return tl.maximum(acc, 0.0).to(tl.float32)


@triton.jit
def _upsample_normalize_kernel(
    low_ptr,
    out_ptr,
    part_ptr,
    h,
    w,
    H,
    W,
    PARTS,
    stride_lb,
    stride_lh,
    stride_lw,
    stride_ob,
    stride_oh,
    stride_ow,
    stride_ps,
    stride_pb,
    scale_h,
    scale_w,
    tiny,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_F: tl.constexpr,
    FOLD: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    low = low_ptr + b * stride_lb
    out = out_ptr + b * stride_ob
    if FOLD:
        # Prologue: the low-resolution map is the ReLU'd sum of a split channel reduction's slices; add them
        # up (slice order), store the map (it is returned too), then read it back below like any input.
        for f_start in range(0, h * w, BLOCK_F):
            pos = f_start + tl.arange(0, BLOCK_F)
            pos_mask = pos < h * w
            value = fold_partials(part_ptr, stride_ps, stride_pb, b, pos, pos_mask, PARTS)
            tl.store(low + (pos // w) * stride_lh + (pos % w) * stride_lw, value, mask=pos_mask)
        tl.debug_barrier()  # the whole map is written before any thread reads it
    offs_h = tl.arange(0, BLOCK_H)
    offs_w = tl.arange(0, BLOCK_W)
    running = tl.full((BLOCK_H, BLOCK_W), float("-inf"), tl.float32)
    peak = tiny
    # Phase 0 finds the upsampled map's max (masked lanes are -inf so they never win); phase 1 recomputes
    # each tile and stores it divided by that max (a division, as the reference: the max maps to exactly 1).
    for phase in tl.static_range(2):
        for y_start in range(0, H, BLOCK_H):
            # rows: PyTorch's source index and weights (computed once per row tile)
            rows = y_start + offs_h
            src_y = tl.maximum(scale_h * (rows.to(tl.float32) + 0.5) - 0.5, 0.0)
            y0 = tl.minimum(src_y.to(tl.int32), h - 1)  # src >= 0, so truncation is floor
            y1 = tl.where(y0 < h - 1, y0 + 1, y0)
            ly1 = tl.minimum(tl.maximum(src_y - y0.to(tl.float32), 0.0), 1.0)[:, None]
            ly0 = 1.0 - ly1
            r0 = (y0 * stride_lh)[:, None]
            r1 = (y1 * stride_lh)[:, None]
            for x_start in range(0, W, BLOCK_W):
                cols = x_start + offs_w
                src_x = tl.maximum(scale_w * (cols.to(tl.float32) + 0.5) - 0.5, 0.0)
                x0 = tl.minimum(src_x.to(tl.int32), w - 1)
                x1 = tl.where(x0 < w - 1, x0 + 1, x0)
                lx1 = tl.minimum(tl.maximum(src_x - x0.to(tl.float32), 0.0), 1.0)[None, :]
                lx0 = 1.0 - lx1
                c0 = (x0 * stride_lw)[None, :]
                c1 = (x1 * stride_lw)[None, :]
                mask = (rows < H)[:, None] & (cols < W)[None, :]
                v00 = tl.load(low + r0 + c0, mask=mask, other=0.0).to(tl.float32)
                v01 = tl.load(low + r0 + c1, mask=mask, other=0.0).to(tl.float32)
                v10 = tl.load(low + r1 + c0, mask=mask, other=0.0).to(tl.float32)
                v11 = tl.load(low + r1 + c1, mask=mask, other=0.0).to(tl.float32)
                # same association as PyTorch's CUDA kernel: along x first, then the two row interpolants
                tile = ly0 * (lx0 * v00 + lx1 * v01) + ly1 * (lx0 * v10 + lx1 * v11)
                if phase == 0:
                    running = tl.maximum(running, tl.where(mask, tile, float("-inf")))
                else:
                    dst = out + (rows.to(tl.int64) * stride_oh)[:, None] + (cols.to(tl.int64) * stride_ow)[None, :]
                    tl.store(dst, tile / peak, mask=mask)
        if phase == 0:
            peak = tl.maximum(tl.max(tl.reshape(running, (BLOCK_H * BLOCK_W,)), axis=0), tiny)


def launch_guard(tensor: Tensor) -> torch.cuda.device | _NoGuard:
    """Triton launches on the *current* CUDA device: make it the tensor's (multi-GPU, torchrun)."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else _NoGuard()


class _NoGuard:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _tile_shape(height: int, width: int, on_gpu: bool) -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_W, num_warps). On GPU: 4,096-element tiles, rows of up to 128 contiguous floats.
    In the interpreter (CPU) every program step costs ~1.5 ms, so take the whole map in one step when it
    fits in 2**16 elements."""
    block_w = triton.next_power_of_2(width)
    if on_gpu:
        block_w = min(block_w, 128)
        block_h = min(triton.next_power_of_2(height), max(1, 4096 // block_w))
        return block_h, block_w, 8
    block_w = min(block_w, 256)
    block_h = min(triton.next_power_of_2(height), max(1, 65536 // block_w))
    return block_h, block_w, 4


def upsample_normalize(lowres: Tensor, size: Sequence[int], *, out: Tensor | None = None) -> Tensor:
    """Bilinear upsampling (align_corners=False) of non-negative (B, h, w) maps to `size` = (H, W), each
    divided by its own max -> (B, H, W) float32. An all-zero map stays zero.

    Args:
        lowres: (B, h, w) float32/float16/bfloat16/float64, any strides (read in place and cast to
            float32 on load, as the reference's `lowres.float()`).
            Values are assumed non-negative (ReLU'd CAMs); not checked, which would need a host sync.
        size: output (H, W).
        out: optional (B, H, W) float32 buffer on the same device (any strides), overwritten entirely.
    """
    if not isinstance(lowres, Tensor):
        raise TypeError(f"lowres must be a torch.Tensor, got {type(lowres).__name__}")
    if lowres.dim() != 3:
        raise ValueError(f"lowres must be (B, h, w), got shape {tuple(lowres.shape)}")
    if lowres.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise TypeError(f"lowres must be a float tensor (float32, float16, bfloat16, float64), got {lowres.dtype}")
    size = check_size(size)
    if len(size) != 2:
        raise ValueError(f"size must be (H, W) for (B, h, w) maps, got {size!r}")
    height, width = size
    batch, low_h, low_w = lowres.shape
    if low_h < 1 or low_w < 1:
        raise ValueError(f"lowres maps must be at least 1x1, got {low_h}x{low_w}")
    if out is None:
        out = torch.empty((batch, height, width), dtype=torch.float32, device=lowres.device)
    elif not isinstance(out, Tensor) or out.shape != (batch, height, width) or out.dtype != torch.float32:
        got = f"{tuple(out.shape)} {out.dtype}" if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"out must be a ({batch}, {height}, {width}) float32 tensor, got {got}")
    elif out.device != lowres.device:
        raise ValueError(f"out is on {out.device} but lowres is on {lowres.device}")
    if batch == 0:
        return out
    return launch_upsample_normalize(lowres, out)


def launch_upsample_normalize(lowres: Tensor, out: Tensor, partials: Tensor | None = None) -> Tensor:
    """Launch the kernel on validated arguments: lowres (B, h, w) and out (B, H, W) float32. With
    `partials` ((parts, B, h·w) contiguous, float32/float64), lowres (float32) is first written as
    ReLU(sum of the parts), then upsampled."""
    batch, low_h, low_w = lowres.shape
    height, width = out.shape[1:]
    if batch == 0:
        return out
    on_gpu = gpu_geometry(lowres)
    block_h, block_w, warps = _tile_shape(height, width, on_gpu)
    block_f = min(triton.next_power_of_2(low_h * low_w), 1024 if on_gpu else 4096)
    fold = partials is not None
    with launch_guard(lowres):
        _upsample_normalize_kernel[(batch,)](
            lowres,
            out,
            partials if fold else lowres,
            low_h,
            low_w,
            height,
            width,
            partials.shape[0] if fold else 1,
            *lowres.stride(),
            *out.stride(),
            *(partials.stride()[:2] if fold else (0, 0)),
            low_h / height,  # PyTorch's scale: in/out, rounded to float32 (exact ints, same rounding)
            low_w / width,
            _TINY,
            BLOCK_H=block_h,
            BLOCK_W=block_w,
            BLOCK_F=block_f,
            FOLD=fold,
            num_warps=warps,
        )
    return out

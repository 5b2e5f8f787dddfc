r"""CF-CAM's cluster filter and channel weighting on Triton, for a whole batch in one launch.

Given gradients $G$ (B, C, h, w) and per-channel labels (B, C) from `fastcam.methods.cfcam.channel_labels`
(`IMPORTANT` = -2, `NOISE` = -1, cluster ids 0, 1, ...), each image's channel weights are

$$ s_c = \begin{cases} \bar G_c = \frac1{hw}\sum_{ij} G_c(i,j) & c \text{ important} \\
                        w_k = \mathrm{mean}(K_k \star M_k),\ M_k = \frac1{|k|}\sum_{c' \in k} G_{c'} & c \in \text{cluster } k
         \end{cases}, \qquad \alpha = \mathrm{softmax}_{c \notin \text{noise}}(s), \quad \alpha_{\text{noise}} = 0 $$

exactly as the torch reference `fastcam.ops.cluster_filter_weights` defines them:

- `variant="paper"`: $K$ is scipy's truncated Gaussian, zero-padded 'same'. The filter is linear, so
  $\mathrm{mean}(K \star M_k) = \frac1{|k|}\sum_{c\in k} t_c$ with $t_c = \frac1{hw}\langle G_c, \text{cov}\rangle$
  and cov = `gaussian_coverage(h, w, sigma, truncate)`: per-channel scalars, averaged per cluster.
- `variant="reference"`: the released code's map-sized kernel
  $K_k = S \odot e^{-(M_k - \bar M_k)^2/(2\sigma_r^2)} / (\sum + 10^{-6})$,
  $S(i,j) = e^{-((i-h/2)^2 + (j-w/2)^2)/(2\sigma_s^2)}$, applied as `F.conv2d(M, K, padding="same")`;
  its mean is $\frac1{hw}\sum_{a,b} K_k(a,b)\,(R_h M_k R_w^\top)(a,b)$ with R the 0/1 window matrices of a
  'same' correlation (`fastcam.ops.cfcam.window_matrix`), computed here as two broadcast-reductions
  over the (h, w) tile: O(hw·(h + w)) per cluster.

Kernels. The maths is three phases per image:
1. one pass over the image's gradients in (BLOCK_C, BLOCK_P) tiles, h·w positions flattened (loaded in
   their own dtype, accumulated in float32; float64 for float64 input; the channel loop is a
   `tl.range(..., num_stages=STAGES)`, software-pipelined on a GPU): important channels' mean gradient
   and, for "paper", every clustered channel's $t_c$, stored to the output row as scratch; the largest
   cluster id;
2. per cluster k (a runtime loop up to the largest id; no host sync): "paper" averages the members' $t_c$;
   "reference" sums the members' gradient maps, gathered through a stable argsort of the labels (one
   torch launch) so the work is O(members), filters $M_k$ (padded (BLOCK_H, BLOCK_W) layout) and reduces it
   to $w_k$; $w_k$ goes to the members;
3. the masked softmax over kept channels, in place (a row with nothing kept gets zeros, as the reference).

Launch geometry (`plan`). With B >= 2 × SM count (queried from the device; 132 in the interpreter),
`_cfcam_weights_kernel` runs all three phases, grid (B,), one program per image, phases separated by
barriers. Below that (ResNet layer4 at batch 1-16: 1-16 programs on 132 SMs, each streaming a whole
image's gradients through one SM) phase 1, which is independent per channel, is split across programs:
`_cfcam_scores_kernel`, grid (B, parts), each program scoring a slice of >= 32 channels (B = 1 at
C = 2,048: 64 programs), then `_cfcam_finish_kernel`, grid (B,), runs phases 2-3 (largest cluster id from
one scan of the labels). Phase 1 needs no partial sums (each channel's score is its own), so the split
adds one launch and no workspace; phases 2-3 stay one program per image ("paper": O(clusters x C) label
and score reads, from L2; "reference": the members' gradient maps are read again by that one program,
which remains the underfilled part of the reference variant at small batches). Channel sums run inside
one program, so results are deterministic (no atomics). Configuration: BLOCK_C, num_warps and the
pipeline depth of the phase-1 kernels are autotuned per shape on a GPU (`fastcam.kernels._launch`),
heuristic (`_blocks`) first and alone in the interpreter.

`cfcam_combine` chains it with `fastcam.kernels.cam_combine.combine` (weighted sum + ReLU, upsample +
normalise): the whole CF-CAM post-clustering path in three launches (four with the reference variant's sort;
one more when phase 1 is split).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from fastcam.kernels import _launch
from fastcam.kernels._launch import ChannelSplit, channel_config, gpu_geometry, shape_tuned
from fastcam.kernels.cam_combine import combine
from fastcam.kernels.upsample_normalize import launch_guard
from fastcam.ops._checks import check_activations, check_channel_labels, check_size
from fastcam.ops.cfcam import IMPORTANT, NOISE, REFERENCE_NORM_EPS, REFERENCE_RANGE_SIGMA, filter_options, gaussian_coverage
from fastcam.ops.cfcam import cluster_filter_weights as _torch_cluster_filter_weights

__all__ = ["CfcamPlan", "cfcam_combine", "cluster_filter_weights", "plan"]

# label values as compile-time constants (jit code may read only constexpr globals)
_IMPORTANT = tl.constexpr(IMPORTANT)
_NOISE = tl.constexpr(NOISE)


@triton.jit
def _load_grad_tile(grad, chan, chan_mask, stride_gc, spatial_off, spatial_mask, ACC: tl.constexpr):
    """(BLOCK_C, positions) gradient tile of the given channels at the given position offsets (phase 1:
    h·w positions flattened; phase 2: the padded (BLOCK_H, BLOCK_W) map row-major), zero outside the map,
    in the accumulation dtype."""
    ptrs = grad + (chan.to(tl.int64) * stride_gc)[:, None] + spatial_off[None, :]
    return tl.load(ptrs, mask=chan_mask[:, None] & spatial_mask[None, :], other=0.0).to(ACC)


@triton.jit
def _reference_geometry(h, w, two_ss2, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, ACC: tl.constexpr):
    """The data-independent parts of the reference filter, built once per program:
    the spatial Gaussian S (BLOCK_H, BLOCK_W), zero outside the map, and the 'same'-correlation window
    indicators R_h[a, r, .] (BLOCK_H, BLOCK_H, 1) and R_w[., b, s] (1, BLOCK_W, BLOCK_W), with
    R[a, r] = 1 iff 0 <= r - a + (n-1)//2 < n (PyTorch pads (n-1)//2 before, the rest after)."""
    rows = tl.arange(0, BLOCK_H)
    cols = tl.arange(0, BLOCK_W)
    valid = (rows < h)[:, None] & (cols < w)[None, :]
    dy = rows.to(ACC) - h / 2  # h/2 is exact (a half-integer), as torch.arange(h) - h / 2
    dx = cols.to(ACC) - w / 2
    spatial = tl.where(valid, tl.exp(-((dy * dy)[:, None] + (dx * dx)[None, :]) / two_ss2), 0.0)
    offset_h = rows[None, :, None] - rows[:, None, None] + (h - 1) // 2
    taps_h = ((offset_h >= 0) & (offset_h < h)).to(ACC)
    offset_w = cols[None, None, :] - cols[None, :, None] + (w - 1) // 2
    taps_w = ((offset_w >= 0) & (offset_w < w)).to(ACC)
    return spatial, taps_h, taps_w


@triton.jit
def _reference_filtered_mean(mean_flat, spatial, taps_h, taps_w, hw, two_rs2, norm_eps,
                             BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """mean(F.conv2d(M, K, padding='same')) for one zero-padded cluster mean map M, given flattened
    (BLOCK_H * BLOCK_W,): K = S * exp(-(M - mean M)^2 / (2 sigma_r^2)) / (sum + eps), and the mean of the
    correlation is sum_{a,b} K[a,b] window[a,b] / hw with window = R_h M R_w^T (the input sum each tap sees).
    (Few reductions: each one re-patches Triton's interpreter.)"""
    mean_map = tl.reshape(mean_flat, (BLOCK_H, BLOCK_W))
    centred = mean_map - tl.sum(mean_flat, axis=0) / hw
    kernel = spatial * tl.exp(-(centred * centred) / two_rs2)  # spatial is 0 off the map
    kernel = kernel / (tl.sum(tl.reshape(kernel, (BLOCK_H * BLOCK_W,)), axis=0) + norm_eps)
    partial = tl.sum(mean_map[:, None, :] * taps_w, axis=2)  # [r, b] = sum_s M[r, s] R_w[b, s]
    window = tl.sum(taps_h * partial[None, :, :], axis=1)  # [a, b] = sum_r R_h[a, r] partial[r, b]
    return tl.sum(tl.reshape(kernel * window, (BLOCK_H * BLOCK_W,)), axis=0) / hw


@triton.jit
def _channel_scores(grad, labels, out, cover_ptr, c_begin, c_end, h, w, stride_gc, stride_gh, stride_gw, stride_lc,
                    stride_wc, REFERENCE: tl.constexpr, FLAT: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, STAGES: tl.constexpr):
    """Phase 1 on channels [c_begin, c_end) of one image: important channels' mean gradient and, for
    "paper", every clustered channel's t_c = <G_c, cov>/hw, stored to the output row as scratch (noise: 0).
    Returns the largest label seen (the largest cluster id, or < 0 without clusters).

    Tiles are (BLOCK_C, BLOCK_P) with the h·w positions flattened (BLOCK_P >= h·w, no per-row padding): with
    FLAT maps (NCHW, channels_last) the position offset is linear, so Triton sees the contiguous axis."""
    hw = h * w
    pos = tl.arange(0, BLOCK_P)
    pos_mask = pos < hw
    if FLAT:
        spatial_off = pos.to(tl.int64) * stride_gw
    else:
        spatial_off = (pos // w).to(tl.int64) * stride_gh + (pos % w).to(tl.int64) * stride_gw
    if not REFERENCE:
        cover = tl.load(cover_ptr + pos, mask=pos_mask, other=0.0).to(ACC)  # (h, w) contiguous
    offs_c = tl.arange(0, BLOCK_C)
    top = tl.full((), -1, tl.int32)
    # software-pipelined on a GPU: STAGES gradient tiles in flight
    for c_start in tl.range(c_begin, c_end, BLOCK_C, num_stages=STAGES):
        chan = c_start + offs_c
        chan_mask = chan < c_end
        lab = tl.load(labels + chan * stride_lc, mask=chan_mask, other=_NOISE).to(tl.int32)
        if REFERENCE:
            needed = chan_mask & (lab == _IMPORTANT)
        else:
            needed = chan_mask & (lab != _NOISE)
        tile = _load_grad_tile(grad, chan, needed, stride_gc, spatial_off, pos_mask, ACC)
        score = tl.sum(tile, axis=1) / hw
        if not REFERENCE:
            smoothed = tl.sum(tile * cover[None, :], axis=1) / hw
            score = tl.where(lab == _IMPORTANT, score, smoothed)
        score = tl.where(lab == _NOISE, 0.0, score)
        tl.store(out + chan * stride_wc, score.to(out.dtype.element_ty), mask=chan_mask)
        top = tl.maximum(top, tl.max(lab, axis=0))
    return top


@triton.jit
def _clusters_and_softmax(grad, labels, order, out, spatial_off, spatial_mask, spatial, taps_h, taps_w, top, C, hw,
                          stride_gc, stride_lc, stride_oc, stride_wc, RANGE_TERM: tl.constexpr,
                          NORM_EPS: tl.constexpr, LOWEST: tl.constexpr, TINY: tl.constexpr,
                          REFERENCE: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr,
                          BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, STAGES: tl.constexpr):
    """Phases 2 and 3 of one image, once every channel's phase-1 score is in the output row: one score per
    cluster written to its members, then the masked softmax over kept channels, in place. `order` is the
    image's row of the stable label argsort ("reference")."""
    offs_c = tl.arange(0, BLOCK_C)
    offs_l = tl.arange(0, BLOCK_L)
    # Phase 2: one score per cluster, written to its members.
    for k in range(0, top + 1):
        if REFERENCE:
            before = tl.full((BLOCK_L,), 0, tl.int32)
            inside = tl.full((BLOCK_L,), 0, tl.int32)
            for l_start in range(0, C, BLOCK_L):
                chan = l_start + offs_l
                lab = tl.load(labels + chan * stride_lc, mask=chan < C, other=_NOISE).to(tl.int64)
                before += (lab < k).to(tl.int32) & (chan < C).to(tl.int32)
                inside += (lab == k).to(tl.int32)
            first = tl.sum(before, axis=0)
            size = tl.sum(inside, axis=0)
            # members of k are order[first : first + size] (labels sorted stably)
            total = tl.full((BLOCK_H * BLOCK_W,), 0, ACC)
            for j_start in tl.range(first, first + size, BLOCK_C, num_stages=STAGES):
                slot = j_start + offs_c
                slot_mask = slot < first + size
                chan = tl.load(order + slot * stride_oc, mask=slot_mask, other=0)
                tile = _load_grad_tile(grad, chan, slot_mask, stride_gc, spatial_off, spatial_mask, ACC)
                total += tl.sum(tile, axis=0)
            mean_map = total / tl.maximum(size, 1).to(ACC)
            cluster_score = _reference_filtered_mean(
                mean_map, spatial, taps_h, taps_w, hw, tl.full((), RANGE_TERM, ACC), tl.full((), NORM_EPS, ACC),
                BLOCK_H, BLOCK_W,
            )
            for j_start in range(first, first + size, BLOCK_C):
                slot = j_start + offs_c
                slot_mask = slot < first + size
                chan = tl.load(order + slot * stride_oc, mask=slot_mask, other=0)
                value = tl.full((BLOCK_C,), 0, ACC) + cluster_score
                tl.store(out + chan * stride_wc, value.to(out.dtype.element_ty), mask=slot_mask)
        else:
            total = tl.full((BLOCK_L,), 0, ACC)
            inside = tl.full((BLOCK_L,), 0, tl.int32)
            for l_start in range(0, C, BLOCK_L):
                chan = l_start + offs_l
                member = tl.load(labels + chan * stride_lc, mask=chan < C, other=_NOISE).to(tl.int64) == k
                total += tl.load(out + chan * stride_wc, mask=member, other=0.0).to(ACC)
                inside += member.to(tl.int32)
            cluster_score = tl.sum(total, axis=0) / tl.maximum(tl.sum(inside, axis=0), 1).to(ACC)
            tl.debug_barrier()  # every member's t_c is read before any is overwritten
            for l_start in range(0, C, BLOCK_L):
                chan = l_start + offs_l
                member = tl.load(labels + chan * stride_lc, mask=chan < C, other=_NOISE).to(tl.int64) == k
                value = tl.full((BLOCK_L,), 0, ACC) + cluster_score
                tl.store(out + chan * stride_wc, value.to(out.dtype.element_ty), mask=member)
        tl.debug_barrier()

    # Phase 3: softmax over kept (non-noise) channels, in place.
    lowest = tl.full((), LOWEST, ACC)
    peak = tl.full((BLOCK_L,), LOWEST, ACC)
    for l_start in range(0, C, BLOCK_L):
        chan = l_start + offs_l
        keep = tl.load(labels + chan * stride_lc, mask=chan < C, other=_NOISE).to(tl.int64) != _NOISE
        score = tl.load(out + chan * stride_wc, mask=keep, other=LOWEST).to(ACC)
        peak = tl.maximum(peak, tl.where(keep, score, lowest))
    top_score = tl.max(peak, axis=0)
    denom = tl.full((BLOCK_L,), 0, ACC)
    for l_start in range(0, C, BLOCK_L):
        chan = l_start + offs_l
        keep = tl.load(labels + chan * stride_lc, mask=chan < C, other=_NOISE).to(tl.int64) != _NOISE
        score = tl.load(out + chan * stride_wc, mask=keep, other=0.0).to(ACC)
        denom += tl.exp(tl.where(keep, score - top_score, float("-inf")))  # exp(-inf) = 0: no overflow
    denom_total = tl.maximum(tl.sum(denom, axis=0), tl.full((), TINY, ACC))
    tl.debug_barrier()
    for l_start in range(0, C, BLOCK_L):
        chan = l_start + offs_l
        chan_mask = chan < C
        keep = tl.load(labels + chan * stride_lc, mask=chan_mask, other=_NOISE).to(tl.int64) != _NOISE
        score = tl.load(out + chan * stride_wc, mask=keep, other=0.0).to(ACC)
        weight = tl.exp(tl.where(keep, score - top_score, float("-inf"))) / denom_total
        tl.store(out + chan * stride_wc, weight.to(out.dtype.element_ty), mask=chan_mask)


@triton.jit
def _map_geometry(h, w, stride_gh, stride_gw, SIGMA_TERM: tl.constexpr, FILTER: tl.constexpr, ACC: tl.constexpr,
                  BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Phase-2 constants: gradient offsets and mask of the padded (BLOCK_H * BLOCK_W,) map positions
    (row-major, the reference filter's 2-D layout) and, with FILTER, the filter's S, R_h, R_w (zero
    placeholders otherwise)."""
    pos = tl.arange(0, BLOCK_H * BLOCK_W)
    row = pos // BLOCK_W
    col = pos % BLOCK_W
    spatial_mask = (row < h) & (col < w)
    spatial_off = row.to(tl.int64) * stride_gh + col.to(tl.int64) * stride_gw
    if FILTER:
        spatial, taps_h, taps_w = _reference_geometry(h, w, tl.full((), SIGMA_TERM, ACC), BLOCK_H, BLOCK_W, ACC)
    else:
        spatial = tl.zeros((BLOCK_H, BLOCK_W), ACC)
        taps_h = tl.zeros((1, 1, 1), ACC)
        taps_w = tl.zeros((1, 1, 1), ACC)
    return spatial_off, spatial_mask, spatial, taps_h, taps_w


def _cfcam_config(args: dict[str, Any]) -> triton.Config:
    """The heuristic configuration: `_blocks`' channel block and warps, a 3-stage channel loop."""
    block_c, _, _, _, warps = _blocks(min(args["C"], args["CHUNK"]), args["h"], args["w"], gpu_geometry(args["grad_ptr"]))
    return channel_config(block_c, 3, warps)


def _cfcam_fits(config: triton.Config, args: dict[str, Any]) -> bool:
    """Channel block within the channels walked (rounded up to a power of two) and tiles of <= 8,192
    elements; the reference variant's fused kernel keeps at least the heuristic's warps (its in-register
    window reduction spills with fewer)."""
    block_c = config.kwargs["BLOCK_C"]
    walk = triton.next_power_of_2(min(args["C"], args["CHUNK"]))
    fits = block_c <= max(16, walk) and block_c * args["BLOCK_P"] <= 8192
    return fits and (not args.get("FUSED_REFERENCE", False) or config.num_warps >= _cfcam_config(args).num_warps)


#: GPU candidates for the phase-1 channel loop: four (a new shape compiles at most four variants); 64-channel
#: blocks on 8 warps only (on 4 warps the fused kernel sits at 254 registers)
_CFCAM_CONFIGS = [
    channel_config(16, 3, 4),
    channel_config(32, 3, 4),
    channel_config(32, 3, 8),
    channel_config(64, 3, 8),
]
_CFCAM_KEY = ["C", "CHUNK", "h", "w", "stride_gc", "stride_gw", "REFERENCE"]


@shape_tuned(
    _CFCAM_CONFIGS, key=_CFCAM_KEY,
    heuristic=lambda args: _cfcam_config(args),  # looked up per call (tests swap `_blocks`)
    fits=lambda config, args: _cfcam_fits(config, {**args, "FUSED_REFERENCE": bool(args["REFERENCE"])}),
)
@triton.jit
def _cfcam_weights_kernel(
    grad_ptr,
    label_ptr,
    order_ptr,
    cover_ptr,
    out_ptr,
    C,
    CHUNK,
    h,
    w,
    stride_gb,
    stride_gc,
    stride_gh,
    stride_gw,
    stride_lb,
    stride_lc,
    stride_ob,
    stride_oc,
    stride_wb,
    stride_wc,
    SIGMA_TERM: tl.constexpr,  # 2 sigma_s^2 ("reference")
    RANGE_TERM: tl.constexpr,  # 2 sigma_r^2 ("reference")
    NORM_EPS: tl.constexpr,
    LOWEST: tl.constexpr,
    TINY: tl.constexpr,
    REFERENCE: tl.constexpr,
    FLAT: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
    STAGES: tl.constexpr,
):
    """Grid (B,): the whole computation for image b (CHUNK == C), phases separated by barriers."""
    b = tl.program_id(0).to(tl.int64)
    grad = grad_ptr + b * stride_gb
    labels = label_ptr + b * stride_lb
    out = out_ptr + b * stride_wb
    top = _channel_scores(grad, labels, out, cover_ptr, 0, C, h, w, stride_gc, stride_gh, stride_gw, stride_lc,
                          stride_wc, REFERENCE, FLAT, ACC, BLOCK_C, BLOCK_P, STAGES)
    tl.debug_barrier()
    spatial_off, spatial_mask, spatial, taps_h, taps_w = _map_geometry(
        h, w, stride_gh, stride_gw, SIGMA_TERM, REFERENCE, ACC, BLOCK_H, BLOCK_W)
    _clusters_and_softmax(grad, labels, order_ptr + b * stride_ob, out, spatial_off, spatial_mask, spatial, taps_h,
                          taps_w, top, C, h * w, stride_gc, stride_lc, stride_oc, stride_wc, RANGE_TERM, NORM_EPS,
                          LOWEST, TINY, REFERENCE, ACC, BLOCK_C, BLOCK_L, BLOCK_H, BLOCK_W, STAGES)


@shape_tuned(
    _CFCAM_CONFIGS, key=_CFCAM_KEY,
    heuristic=lambda args: _cfcam_config(args),
    fits=lambda config, args: _cfcam_fits(config, args),
)
@triton.jit
def _cfcam_scores_kernel(
    grad_ptr,
    label_ptr,
    cover_ptr,
    out_ptr,
    C,
    CHUNK,
    h,
    w,
    stride_gb,
    stride_gc,
    stride_gh,
    stride_gw,
    stride_lb,
    stride_lc,
    stride_wb,
    stride_wc,
    REFERENCE: tl.constexpr,
    FLAT: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    STAGES: tl.constexpr,
):
    """Grid (B, parts), split path, launch 1: phase 1 on channel slice s of image b (independent per
    channel, so the slices need no partial sums)."""
    b = tl.program_id(0).to(tl.int64)
    c_begin = tl.program_id(1) * CHUNK
    c_end = tl.minimum(c_begin + CHUNK, C)
    _channel_scores(grad_ptr + b * stride_gb, label_ptr + b * stride_lb, out_ptr + b * stride_wb, cover_ptr,
                    c_begin, c_end, h, w, stride_gc, stride_gh, stride_gw, stride_lc, stride_wc, REFERENCE, FLAT, ACC,
                    BLOCK_C, BLOCK_P, STAGES)


@triton.jit
def _cfcam_finish_kernel(
    grad_ptr,
    label_ptr,
    order_ptr,
    out_ptr,
    C,
    h,
    w,
    stride_gb,
    stride_gc,
    stride_gh,
    stride_gw,
    stride_lb,
    stride_lc,
    stride_ob,
    stride_oc,
    stride_wb,
    stride_wc,
    SIGMA_TERM: tl.constexpr,
    RANGE_TERM: tl.constexpr,
    NORM_EPS: tl.constexpr,
    LOWEST: tl.constexpr,
    TINY: tl.constexpr,
    REFERENCE: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
    STAGES: tl.constexpr,
):
    """Grid (B,), split path, launch 2: phases 2-3 of image b from the scores launch 1 wrote; the largest
    cluster id comes from one scan of the labels."""
    b = tl.program_id(0).to(tl.int64)
    labels = label_ptr + b * stride_lb
    offs_l = tl.arange(0, BLOCK_L)
    tops = tl.full((BLOCK_L,), -1, tl.int64)
    for l_start in range(0, C, BLOCK_L):
        chan = l_start + offs_l
        tops = tl.maximum(tops, tl.load(labels + chan * stride_lc, mask=chan < C, other=_NOISE).to(tl.int64))
    spatial_off, spatial_mask, spatial, taps_h, taps_w = _map_geometry(
        h, w, stride_gh, stride_gw, SIGMA_TERM, REFERENCE, ACC, BLOCK_H, BLOCK_W)
    _clusters_and_softmax(grad_ptr + b * stride_gb, labels, order_ptr + b * stride_ob, out_ptr + b * stride_wb,
                          spatial_off, spatial_mask, spatial, taps_h, taps_w, tl.max(tops, axis=0), C, h * w,
                          stride_gc, stride_lc, stride_oc, stride_wc, RANGE_TERM, NORM_EPS, LOWEST, TINY, REFERENCE,
                          ACC, BLOCK_C, BLOCK_L, BLOCK_H, BLOCK_W, STAGES)


#: largest (BLOCK_H, BLOCK_H | BLOCK_W, BLOCK_W) window product the reference filter builds in registers on GPU
_MAX_WINDOW_ELEMENTS = 32 * 32 * 32


@functools.lru_cache(maxsize=64)
def _coverage(height: int, width: int, sigma: float, truncate: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The paper variant's coverage map, built once per shape/filter/device (a few small torch ops)."""
    return gaussian_coverage(height, width, sigma, truncate, dtype=dtype, device=device).contiguous()


def _blocks(channels: int, height: int, width: int, on_gpu: bool) -> tuple[int, int, int, int, int]:
    """(BLOCK_C, BLOCK_L, BLOCK_H, BLOCK_W, num_warps): gradient tiles of ~4,096 elements on GPU (the
    whole padded map per channel); in the interpreter (~1.5 ms a program step) tiles 4x larger.
    8 warps for 4,096-element tiles and for reference windows above 8,192 elements: compiled for sm_90
    (bench/compile_sm90.py), the fused kernel with a pipelined 64x64 tile on 4 warps sits at 254-255
    registers (one CTA of 4 warps per 64 K registers), 16x16 reference maps on 4 warps spill; 8 warps use
    184-227 registers and spill nothing."""
    block_h, block_w = triton.next_power_of_2(height), triton.next_power_of_2(width)
    budget = 4096 if on_gpu else 16384
    block_c = min(triton.next_power_of_2(channels), max(1, budget // (block_h * block_w)))
    block_l = min(triton.next_power_of_2(channels), 1024 if on_gpu else 4096)
    big_tile = on_gpu and block_c * block_h * block_w >= 4096
    warps = 8 if big_tile or block_h * block_w * max(block_h, block_w) > 8192 else 4
    return block_c, block_l, block_h, block_w, warps


#: a slice of the split phase 1 scores at least this many channels (32 x 64 positions: 8 KB of float32 per
#: program), in multiples of `_SPLIT_ALIGN`
_MIN_CHUNK = 32
_SPLIT_ALIGN = 32


@dataclass(frozen=True)
class CfcamPlan:
    """Launch geometry: one fused launch with grid (B,), or (split) a scores launch with grid
    (B, split.parts) followed by a finishing launch with grid (B,)."""

    batch: int
    split: ChannelSplit

    @property
    def grid(self) -> tuple[int, ...]:
        return (self.batch, self.split.parts) if self.split.split else (self.batch,)

    def as_dict(self) -> dict[str, Any]:
        return {"grid": list(self.grid), **self.split.as_dict()}


def plan(gradients: Tensor) -> CfcamPlan:
    """Grid (B,) when B >= 2x the SM count (or the channels are too few to slice); otherwise phase 1 split
    into channel slices (`fastcam.kernels._launch.channel_split`) and phases 2-3 in a second launch."""
    batch, channels = gradients.shape[:2]
    split = _launch.channel_split(
        batch, channels, _launch.sm_count(gradients.device), min_chunk=_MIN_CHUNK, align=_SPLIT_ALIGN
    )
    return CfcamPlan(batch, split)


def cluster_filter_weights(
    gradients: Tensor,
    labels: Tensor,
    *,
    variant: str = "paper",
    sigma: float | None = None,
    range_sigma: float = REFERENCE_RANGE_SIGMA,
    truncate: float = 4.0,
    out: Tensor | None = None,
) -> Tensor:
    """CF-CAM channel weights (B, C) from gradients (B, C, h, w) and channel labels (B, C), on Triton.

    Same contract as the torch reference `fastcam.ops.cluster_filter_weights`: float32 result
    (float64 for float64 gradients); half gradients are read as they are and accumulated in float32.
    Gradients and labels may have any strides. `out`: optional (B, C) buffer of the result dtype.
    The reference variant on GPU with maps larger than 32x32 (padded) runs the torch reference instead:
    its window reduction would not fit in registers. Labels are taken as `channel_labels` makes them (-2, -1 or a cluster id >= 0); their values are not
    checked here, which would cost a host sync.
    """
    sigma, range_sigma, truncate = filter_options(variant, sigma, range_sigma, truncate)
    check_activations(gradients, "gradients", dims=(4,))
    check_channel_labels(labels, gradients)
    batch, channels, height, width = gradients.shape
    acc_dtype = torch.float64 if gradients.dtype == torch.float64 else torch.float32
    if out is None:
        out = torch.empty((batch, channels), dtype=acc_dtype, device=gradients.device)
    elif not isinstance(out, Tensor) or out.shape != (batch, channels) or out.dtype != acc_dtype:
        got = f"{tuple(out.shape)} {out.dtype}" if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"out must be a ({batch}, {channels}) {acc_dtype} tensor, got {got}")
    elif out.device != gradients.device:
        raise ValueError(f"out is on {out.device} but the gradients are on {gradients.device}")
    if batch == 0:
        return out

    reference = variant == "reference"
    on_gpu = gpu_geometry(gradients)
    block_c, block_l, block_h, block_w, warps = _blocks(channels, height, width, on_gpu)
    if reference and on_gpu and block_h * block_w * max(block_h, block_w) > _MAX_WINDOW_ELEMENTS:
        # maps beyond 32x32: the in-register (h, h, w) window reduction would spill; the vectorised torch
        # reference (same semantics, a few more launches) is the better choice there
        return out.copy_(_torch_cluster_filter_weights(
            gradients, labels, variant=variant, sigma=sigma, range_sigma=range_sigma, truncate=truncate))
    if reference:
        order = torch.argsort(labels, dim=1, stable=True)  # cluster k's members: a contiguous run
        cover = out  # unused (a valid pointer of the right kind)
    else:
        order = labels  # unused
        cover = _coverage(height, width, sigma, float(truncate), acc_dtype, gradients.device)
    finfo = torch.finfo(acc_dtype)
    geometry = plan(gradients)
    block_p = triton.next_power_of_2(height * width)
    flat = height == 1 or gradients.stride(2) == width * gradients.stride(3)  # (h, w) is one strided run
    acc = tl.float64 if acc_dtype == torch.float64 else tl.float32
    filter_terms = dict(SIGMA_TERM=2 * sigma**2, RANGE_TERM=2 * float(range_sigma) ** 2, NORM_EPS=REFERENCE_NORM_EPS,
                        LOWEST=finfo.min, TINY=finfo.tiny, REFERENCE=reference, ACC=acc)
    with launch_guard(gradients):
        if not geometry.split.split:
            _cfcam_weights_kernel[geometry.grid](
                gradients, labels, order, cover, out,
                channels, channels, height, width,
                *gradients.stride(), *labels.stride(), *order.stride(), *out.stride(),
                **filter_terms, FLAT=flat, BLOCK_P=block_p, BLOCK_L=block_l, BLOCK_H=block_h, BLOCK_W=block_w,
            )
            return out
        _cfcam_scores_kernel[geometry.grid](
            gradients, labels, cover, out,
            channels, geometry.split.chunk, height, width,
            *gradients.stride(), *labels.stride(), *out.stride(),
            REFERENCE=reference, FLAT=flat, ACC=acc, BLOCK_P=block_p,
        )
        _cfcam_finish_kernel[(batch,)](
            gradients, labels, order, out,
            channels, height, width,
            *gradients.stride(), *labels.stride(), *order.stride(), *out.stride(),
            **filter_terms, BLOCK_C=block_c, BLOCK_L=block_l, BLOCK_H=block_h, BLOCK_W=block_w, STAGES=2,
            num_warps=warps,
        )
    return out


def cfcam_combine(
    activations: Tensor,
    gradients: Tensor,
    labels: Tensor,
    size: Sequence[int],
    *,
    variant: str = "paper",
    sigma: float | None = None,
    range_sigma: float = REFERENCE_RANGE_SIGMA,
    truncate: float = 4.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """CF-CAM after clustering: weights (B, C), lowres (B, h, w) and maps (B, H, W), in 3 launches
    (4 for "reference"): the weights kernel, then the shared weighted-sum and upsample-normalise kernels."""
    check_activations(activations, dims=(4,))
    if activations.shape != gradients.shape:
        raise ValueError(f"activations {tuple(activations.shape)} and gradients {tuple(gradients.shape)} differ")
    height, width = check_size(size)
    weights = cluster_filter_weights(
        gradients, labels, variant=variant, sigma=sigma, range_sigma=range_sigma, truncate=truncate
    )
    lowres, maps = combine(activations, weights, (height, width))
    return weights, lowres, maps

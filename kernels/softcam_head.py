r"""Fused SoftCAM evidence head: 1×1-conv class evidence + pooled logits in one pass, its backward, and
the SoftCAM explanation maps of the requested classes.

SoftCAM (Djoumessi & Berens, MIDL 2026) replaces a CNN's global pooling + fully connected classifier by a
1×1 convolution from the last feature map A (B, C, h, w) to K signed class-evidence maps

    E[b, k, p] = \sum_c W[k, c] A[b, c, p] + bias[k]                  (p runs over the h·w pixels)

and takes the logits as a spatial pooling of each evidence map:

    avg:  y[b, k] = 1/P \sum_p E[b, k, p]                              (the paper's choice, P = h·w)
    max:  y[b, k] = max_p E[b, k, p]
    lse:  y[b, k] = T log(1/P \sum_p exp(E[b, k, p] / T))              (soft pooling; avg as T→∞, max as T→0)

`evidence_head` computes E and y with ONE Triton kernel (`_evidence_head_fwd_kernel`, grid
(B · ceil(K / BLOCK_K),)): each program owns one image and a block of classes, accumulates the GEMM over C
in float32 with `tl.dot` (the channel loop a `tl.range(..., num_stages=STAGES)`, software-pipelined on a
GPU), and reduces every finished pixel tile into the pooling statistics in its epilogue (running sum; running max; for lse an online log-sum-exp kept in
expm1 form, s = \sum_p expm1((E_p - m)/T) <= 0 rescaled whenever the running max m grows, and
y = m + T log1p(s / P): nothing overflows, and unlike T log(\sum exp / P) it stays float32-accurate for large
T, matching `pool_evidence`). The features are read once, instead of once by the convolution and the
evidence again by the pooling.

Small batches (`plan`): SoftCAM's 2-5 classes fit one class block, so the grid is B programs, 1-16 for
ResNet layer4 at batch 1-16 on an H100's 132 SMs. When B · class blocks < 2 × SM count (queried from the
device; 132 in the interpreter) the channel reduction is split (`fastcam.kernels._launch.channel_split`):
`_evidence_partial_kernel`, grid (B · class blocks, parts), writes each slice's bias-free evidence to a
(parts, B, K, h·w) float32 workspace, and `_evidence_reduce_kernel`, grid (B · class blocks,), adds the
slices in slice order, adds the bias, stores E and pools it exactly as the fused epilogue does
(deterministic, no atomics). A slice walks >= 32 channels and at least 2·BLOCK_K·4 / element-size, so its
partial evidence costs at most half the feature bytes it reads: K = 2 at C = 2,048 -> 64 slices at B = 1;
K = 1,000 (128-class blocks, compute-bound) -> 8 slices of 256 channels, 8 x 8 programs at B = 1.
Configuration: BLOCK_K and BLOCK_P from `_head_blocks` (they shape the grid and the workspace); BLOCK_C,
num_warps and the pipeline depth autotuned per shape on a GPU (`fastcam.kernels._launch`), heuristic
first and alone in the interpreter. The backward's `_evidence_grad_kernel` keeps its (B · ceil(K / BLOCK_K),)
grid: at K <= 5 it touches B·K·h·w floats (a few KB at small B, launch-bound whatever the grid); at
K = 1,000 it has 32 class blocks per image (256 programs from B = 8).

Backward (a `torch.autograd.Function`, so `fastcam.softcam.fit` trains through the fused head with the
ElasticNet penalty on E): the gradient reaching the evidence is

    G[b, k, p] = dL/dE[b, k, p] + dL/dy[b, k] · dy[b, k]/dE[b, k, p],  with dy/dE_p =
        avg: 1/P;   max: [E_p = y] / #{q : E_q = y} (ties share, like torch.amax);
        lse: softmax_p(E/T) = exp((E_p - y)/T) / P,

built by a small Triton kernel from the saved evidence and logits; then
dL/dbias[k] = \sum_{b,p} G,  dL/dW[k, c] = \sum_{b,p} G[b,k,p] A[b,c,p],  dL/dA[b,c,p] = \sum_k W[k,c] G[b,k,p]
are two GEMMs left to torch (cuBLAS on a GPU), in float32.

`softcam_maps` gathers the target class's evidence per image and applies ReLU in a small kernel, then
reuses the shared bilinear-upsample + per-image max-normalise kernel (`fastcam.kernels.upsample_normalize`).

Dtypes: features may be float32, float16 or bfloat16 (weights any float dtype); tiles are cast to float32
right after loading (Triton's interpreter computes garbage for a bfloat16 `tl.dot`), accumulation is float32,
and on a GPU the float32 `tl.dot` follows PyTorch's convolution policy: TF32 tensor cores when
`torch.backends.cudnn.allow_tf32` is True (PyTorch's default for convolutions), exact IEEE float32 otherwise.
Outputs: logits (B, K) float32 and evidence (B, K, h, w) float32 (contiguous). float64 features are
not a kernel dtype: `evidence_head` computes them with torch in float64 (see its docstring). Any C, h, w, K (masked
tiles, no power-of-two assumption); features may be non-contiguous or channels_last (strides are used; no copy).

The torch references are `fastcam.ops.evidence_head` (F.conv2d 1×1 + `fastcam.ops.pool_evidence`) and
`fastcam.ops.softcam_maps`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from fastcam.kernels import _launch
from fastcam.kernels._launch import ChannelSplit, channel_config, gpu_geometry, shape_tuned
from fastcam.kernels.upsample_normalize import launch_guard, upsample_normalize
from fastcam.ops._checks import POOLS, check_class_targets, check_head_inputs, check_pool, check_size
from fastcam.ops.softcam import evidence_head as _torch_evidence_head

_POOL_CODE = {"avg": 0, "max": 1, "lse": 2}
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------------------------- kernels
@triton.jit
def _expm1_nonpositive(x):
    """exp(x) - 1 for x <= 0, accurate to float32 rounding also near 0 (where exp(x) - 1 cancels).

    Taylor series to x^9 for x > -0.3 (truncation < 3e-10 relative); exp(x) - 1 below, where the result's
    magnitude exceeds 0.25 and nothing cancels. (libdevice.expm1 does not run in Triton's interpreter.)
    """
    series = x * (1.0 + x * (1.0 / 2 + x * (1.0 / 6 + x * (1.0 / 24 + x * (1.0 / 120 + x * (
        1.0 / 720 + x * (1.0 / 5040 + x * (1.0 / 40320 + x * (1.0 / 362880)))))))))
    return tl.where(x > -0.3, series, tl.exp(x) - 1.0)


@triton.jit
def _log1p(z):
    """log(1 + z) for z > -1, accurate near 0: 2 atanh(t), t = z / (2 + z), series to t^13 for |z| < 0.3
    (|t| < 0.18: truncation < 1e-11 relative); log(1 + z) elsewhere, where |result| > 0.26."""
    small = tl.abs(z) < 0.3
    t = tl.where(small, z, 0.0) / (2.0 + tl.where(small, z, 0.0))
    t2 = t * t
    series = 2.0 * t * (1.0 + t2 * (1.0 / 3 + t2 * (1.0 / 5 + t2 * (1.0 / 7 + t2 * (1.0 / 9 + t2 * (1.0 / 11 + t2 / 13))))))
    return tl.where(small, series, tl.log(1.0 + z))


@triton.jit
def _pixel_offsets(offs_p, W_IMG, stride_fh, stride_fw, FLAT_PIXELS: tl.constexpr):
    """Feature offsets of the flattened pixels p = i·w + j."""
    if FLAT_PIXELS:
        return offs_p.to(tl.int64) * stride_fw
    return (offs_p // W_IMG).to(tl.int64) * stride_fh + (offs_p % W_IMG).to(tl.int64) * stride_fw


@triton.jit
def _evidence_tile(feat_base, weight_ptr, offs_k, k_mask, p_off, p_mask, c_begin, c_end, stride_fc, stride_wk,
                   stride_wc, INPUT_PRECISION: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
                   BLOCK_P: tl.constexpr, STAGES: tl.constexpr):
    """sum_{c in [c_begin, c_end)} W[k, c] A[c, p] for a (BLOCK_K, BLOCK_P) tile: a float32 `tl.dot` chain
    over BLOCK_C channel steps, software-pipelined STAGES deep on a GPU."""
    acc = tl.zeros((BLOCK_K, BLOCK_P), dtype=tl.float32)
    for c0 in tl.range(c_begin, c_end, BLOCK_C, num_stages=STAGES):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        c_mask = offs_c < c_end
        w_tile = tl.load(
            weight_ptr + offs_k[:, None] * stride_wk + offs_c[None, :] * stride_wc,
            mask=k_mask[:, None] & c_mask[None, :], other=0.0,
        ).to(tl.float32)
        a_tile = tl.load(
            feat_base + offs_c[:, None].to(tl.int64) * stride_fc + p_off[None, :],
            mask=c_mask[:, None] & p_mask[None, :], other=0.0,
        ).to(tl.float32)  # cast before the dot: the interpreter's bf16 tl.dot is wrong
        acc = tl.dot(w_tile, a_tile, acc, input_precision=INPUT_PRECISION)
    return acc


@triton.jit
def _class_block(K, NUM_K_BLOCKS, BLOCK_K: tl.constexpr):
    """(image, class offsets, class mask) of this program. Axis 0 enumerates (image, class block) with the
    class blocks fastest: programs running together share one image, whose features then come from L2
    for every class block after the first (matters for K = 1000)."""
    pid = tl.program_id(0)
    pid_b = (pid // NUM_K_BLOCKS).to(tl.int64)
    offs_k = (pid % NUM_K_BLOCKS) * BLOCK_K + tl.arange(0, BLOCK_K)
    return pid_b, offs_k, offs_k < K


@triton.jit
def _pool_start(bias_ptr, offs_k, k_mask, HAS_BIAS: tl.constexpr, BLOCK_K: tl.constexpr):
    """The class block's bias (zeros without one) and empty pooling statistics: running sum, running max,
    lse's run_s = sum_p expm1((E_p - run_max)/T) <= 0 over the pixels seen so far, and a NaN flag (a GPU's
    max ignores NaN (fmaxf); torch.amax propagates it: tracked so "max"/"lse" never hide one)."""
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_k, mask=k_mask, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros((BLOCK_K,), dtype=tl.float32)
    run_sum = tl.zeros((BLOCK_K,), dtype=tl.float32)
    run_max = tl.full((BLOCK_K,), float("-inf"), dtype=tl.float32)
    run_s = tl.zeros((BLOCK_K,), dtype=tl.float32)
    run_nan = tl.zeros((BLOCK_K,), dtype=tl.float32)
    return bias, run_sum, run_max, run_s, run_nan


@triton.jit
def _pool_update(acc, p_mask, p0, run_sum, run_max, run_s, run_nan, inv_temperature, POOL: tl.constexpr):
    """Fold one finished (BLOCK_K, BLOCK_P) evidence tile (pixels p0 ...) into the pooling statistics."""
    if POOL == 0:
        run_sum += tl.sum(tl.where(p_mask[None, :], acc, 0.0), axis=1)
    else:
        tile_max = tl.max(tl.where(p_mask[None, :], acc, float("-inf")), axis=1)
        run_nan = tl.maximum(run_nan, tl.max(tl.where(p_mask[None, :] & (acc != acc), 1.0, 0.0), axis=1))
        new_max = tl.maximum(run_max, tile_max)
        if POOL == 2:
            # Online log-sum-exp in expm1 form, so it stays accurate for large T (where every
            # exp((E - m)/T) is close to 1 and a plain sum of exps would lose the signal to rounding):
            # with d = (m_old - m_new)/T <= 0 and n = pixels seen before this tile,
            #   sum_p expm1((E_p - m_new)/T) = run_s·exp(d) + n·expm1(d) + sum_tile expm1((E - m_new)/T);
            # every term is <= 0, so nothing cancels. The first tile has n = 0 and run_s = 0.
            shifted = tl.where(p_mask[None, :], (acc - new_max[:, None]) * inv_temperature, 0.0)
            tile_s = tl.sum(tl.where(p_mask[None, :], _expm1_nonpositive(shifted), 0.0), axis=1)
            if p0 > 0:
                d = (run_max - new_max) * inv_temperature
                run_s = run_s * tl.exp(d) + p0 * _expm1_nonpositive(d)
            run_s += tile_s
        run_max = new_max
    return run_sum, run_max, run_s, run_nan


@triton.jit
def _pool_finish(run_sum, run_max, run_s, run_nan, inv_hw, temperature, POOL: tl.constexpr):
    """The logits from the pooling statistics of all pixels."""
    if POOL == 0:
        logits = run_sum * inv_hw
    elif POOL == 1:
        logits = run_max
    else:
        # y = m + T log(mean_p exp((E_p - m)/T)) = m + T log1p(mean_p expm1((E_p - m)/T)); the log1p
        # argument is >= 1/P - 1 > -1 (the max pixel contributes expm1(0) = 0)
        logits = run_max + temperature * _log1p(run_s * inv_hw)
    if POOL != 0:
        logits = tl.where(run_nan > 0.0, float("nan"), logits)
    return logits


def _head_config(args: dict[str, Any]) -> triton.Config:
    """The heuristic configuration: `_head_blocks`' channel step and warps, a 3-stage channel loop."""
    _, block_c, _, warps = _head_blocks(args["K"], min(args["C"], args["CHUNK"]), args["HW"],
                                        gpu_geometry(args["feat_ptr"]))
    return channel_config(block_c, 3, warps)


def _head_fits(config: triton.Config, args: dict[str, Any]) -> bool:
    """A candidate fits when its channel step is within the channels walked (power of two) and its pipeline
    buffers ((BLOCK_K + BLOCK_P) x BLOCK_C float32 per stage) stay under 160 KiB of shared memory, and its
    registers hold: 128-class tiles take 8 warps and channel steps <= 32; smaller class tiles keep the
    accumulator plus one operand stage within 64 values a thread (compiled for sm_90 with TF32, the
    candidates beyond these limits spilled: bench/compile_sm90.py)."""
    block_c, stages = config.kwargs["BLOCK_C"], config.kwargs["STAGES"]
    block_k, block_p, threads = args["BLOCK_K"], args["BLOCK_P"], 32 * config.num_warps
    walk = triton.next_power_of_2(min(args["C"], args["CHUNK"]))
    smem = (block_k + block_p) * block_c * 4 * stages
    if block_k >= 128:  # wgmma tiles
        return block_c <= max(16, walk) and smem <= 160 * 1024 and config.num_warps == 8 and block_c <= 32
    # mma.sync tiles: accumulator + one operand stage per thread <= 64 values (more spilled at 16x16 maps)
    per_thread = (block_k * block_p + block_c * block_p) // threads
    return block_c <= max(16, walk) and smem <= 160 * 1024 and per_thread <= 64


#: GPU candidates for the channel loop (BLOCK_K and BLOCK_P come from `_head_blocks`), none of which
#: spills at the ResNet layer4 shapes (bench/compile_sm90.py): 4 warps for the bandwidth-bound few-class
#: heads, 8 for 128-class tiles, 3-4 pipeline stages; four, so a new shape compiles at most four variants
_HEAD_CONFIGS = [
    channel_config(16, 3, 4),
    channel_config(32, 3, 4),
    channel_config(16, 4, 8),
    channel_config(32, 3, 8),
]
_HEAD_KEY = ["C", "K", "HW", "CHUNK", "stride_fc", "stride_fw", "POOL"]


@shape_tuned(
    _HEAD_CONFIGS, key=_HEAD_KEY,
    heuristic=lambda args: _head_config(args),  # looked up per call
    fits=lambda config, args: _head_fits(config, args),
)
@triton.jit
def _evidence_head_fwd_kernel(
    feat_ptr, weight_ptr, bias_ptr, evidence_ptr, logits_ptr,
    C, CHUNK, K, HW, W_IMG, NUM_K_BLOCKS,
    stride_fb, stride_fc, stride_fh, stride_fw,
    stride_wk, stride_wc,
    inv_hw, temperature, inv_temperature,
    POOL: tl.constexpr,  # 0 avg, 1 max, 2 lse
    HAS_BIAS: tl.constexpr,
    FLAT_PIXELS: tl.constexpr,  # pixel p sits at p * stride_fw (NCHW-contiguous, channels_last, ...)
    INPUT_PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, STAGES: tl.constexpr,
):
    """Grid (B · class blocks,): evidence tiles over all channels (CHUNK == C) and the pooled logits."""
    pid_b, offs_k, k_mask = _class_block(K, NUM_K_BLOCKS, BLOCK_K)
    bias, run_sum, run_max, run_s, run_nan = _pool_start(bias_ptr, offs_k, k_mask, HAS_BIAS, BLOCK_K)
    feat_base = feat_ptr + pid_b * stride_fb
    evid_base = evidence_ptr + pid_b * K * HW

    for p0 in range(0, HW, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        p_mask = offs_p < HW
        p_off = _pixel_offsets(offs_p, W_IMG, stride_fh, stride_fw, FLAT_PIXELS)
        acc = _evidence_tile(feat_base, weight_ptr, offs_k, k_mask, p_off, p_mask, 0, C, stride_fc, stride_wk,
                             stride_wc, INPUT_PRECISION, BLOCK_K, BLOCK_C, BLOCK_P, STAGES)
        acc = acc + bias[:, None]
        tl.store(evid_base + offs_k[:, None] * HW + offs_p[None, :], acc, mask=k_mask[:, None] & p_mask[None, :])
        run_sum, run_max, run_s, run_nan = _pool_update(acc, p_mask, p0, run_sum, run_max, run_s, run_nan,
                                                        inv_temperature, POOL)
    logits = _pool_finish(run_sum, run_max, run_s, run_nan, inv_hw, temperature, POOL)
    tl.store(logits_ptr + pid_b * K + offs_k, logits, mask=k_mask)


@shape_tuned(
    _HEAD_CONFIGS, key=_HEAD_KEY,
    heuristic=lambda args: _head_config(args),
    fits=lambda config, args: _head_fits(config, args),
)
@triton.jit
def _evidence_partial_kernel(
    feat_ptr, weight_ptr, part_ptr,
    C, CHUNK, K, HW, W_IMG, NUM_K_BLOCKS,
    stride_fb, stride_fc, stride_fh, stride_fw,
    stride_wk, stride_wc,
    stride_ps, stride_pb,
    FLAT_PIXELS: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, STAGES: tl.constexpr,
):
    """Grid (B · class blocks, parts), split path, launch 1: the evidence of channel slice s (no bias) for
    every pixel, stored to the (parts, B, K, HW) float32 workspace."""
    pid_b, offs_k, k_mask = _class_block(K, NUM_K_BLOCKS, BLOCK_K)
    part = tl.program_id(1)
    c_begin = part * CHUNK
    c_end = tl.minimum(c_begin + CHUNK, C)
    feat_base = feat_ptr + pid_b * stride_fb
    part_base = part_ptr + part.to(tl.int64) * stride_ps + pid_b * stride_pb
    for p0 in range(0, HW, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        p_mask = offs_p < HW
        p_off = _pixel_offsets(offs_p, W_IMG, stride_fh, stride_fw, FLAT_PIXELS)
        acc = _evidence_tile(feat_base, weight_ptr, offs_k, k_mask, p_off, p_mask, c_begin, c_end, stride_fc,
                             stride_wk, stride_wc, INPUT_PRECISION, BLOCK_K, BLOCK_C, BLOCK_P, STAGES)
        tl.store(part_base + offs_k[:, None] * HW + offs_p[None, :], acc, mask=k_mask[:, None] & p_mask[None, :])


@triton.jit
def _evidence_reduce_kernel(
    part_ptr, bias_ptr, evidence_ptr, logits_ptr,
    K, HW, NUM_K_BLOCKS, PARTS,
    stride_ps, stride_pb,
    inv_hw, temperature, inv_temperature,
    POOL: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Grid (B · class blocks,), split path, launch 2: E = (sum over slices s = 0, 1, ... of the partial
    evidence, in slice order) + bias, stored, and pooled into the logits as in the fused kernel."""
    pid_b, offs_k, k_mask = _class_block(K, NUM_K_BLOCKS, BLOCK_K)
    bias, run_sum, run_max, run_s, run_nan = _pool_start(bias_ptr, offs_k, k_mask, HAS_BIAS, BLOCK_K)
    part_base = part_ptr + pid_b * stride_pb
    evid_base = evidence_ptr + pid_b * K * HW
    for p0 in range(0, HW, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        p_mask = offs_p < HW
        mask = k_mask[:, None] & p_mask[None, :]
        tile = part_base + offs_k[:, None] * HW + offs_p[None, :]
        acc = tl.load(tile, mask=mask, other=0.0)
        for s in range(1, PARTS):
            acc += tl.load(tile + s * stride_ps, mask=mask, other=0.0)
        acc = acc + bias[:, None]
        tl.store(evid_base + offs_k[:, None] * HW + offs_p[None, :], acc, mask=mask)
        run_sum, run_max, run_s, run_nan = _pool_update(acc, p_mask, p0, run_sum, run_max, run_s, run_nan,
                                                        inv_temperature, POOL)
    logits = _pool_finish(run_sum, run_max, run_s, run_nan, inv_hw, temperature, POOL)
    tl.store(logits_ptr + pid_b * K + offs_k, logits, mask=k_mask)


@triton.jit
def _evidence_grad_kernel(
    evidence_ptr, logits_ptr, grad_logits_ptr, grad_evidence_ptr, out_ptr,
    K, HW, NUM_K_BLOCKS,
    stride_gyb, stride_gyk,
    stride_geb, stride_gek, stride_gep,
    inv_hw, inv_temperature,
    POOL: tl.constexpr,
    HAS_GRAD_LOGITS: tl.constexpr, HAS_GRAD_EVIDENCE: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """G = dL/dE + dL/dy * dy/dE for one image and a block of classes; evidence/out are (B, K, HW)."""
    pid = tl.program_id(0)
    pid_k = pid % NUM_K_BLOCKS
    pid_b = (pid // NUM_K_BLOCKS).to(tl.int64)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    k_mask = offs_k < K
    evid_base = evidence_ptr + pid_b * K * HW
    out_base = out_ptr + pid_b * K * HW

    if HAS_GRAD_LOGITS:
        grad_y = tl.load(grad_logits_ptr + pid_b * stride_gyb + offs_k * stride_gyk, mask=k_mask, other=0.0).to(tl.float32)
        y = tl.load(logits_ptr + pid_b * K + offs_k, mask=k_mask, other=0.0)
        if POOL == 1:
            # ties share the gradient equally (torch.amax's rule): count the maxima first
            count = tl.zeros((BLOCK_K,), dtype=tl.float32)
            for p0 in range(0, HW, BLOCK_P):
                offs_p = p0 + tl.arange(0, BLOCK_P)
                mask = k_mask[:, None] & (offs_p < HW)[None, :]
                e = tl.load(evid_base + offs_k[:, None] * HW + offs_p[None, :], mask=mask, other=float("-inf"))
                count += tl.sum(tl.where(mask & (e == y[:, None]), 1.0, 0.0), axis=1)
            grad_y = grad_y / tl.maximum(count, 1.0)

    for p0 in range(0, HW, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        mask = k_mask[:, None] & (offs_p < HW)[None, :]
        g = tl.zeros((BLOCK_K, BLOCK_P), dtype=tl.float32)
        if HAS_GRAD_EVIDENCE:
            g += tl.load(
                grad_evidence_ptr + pid_b * stride_geb + offs_k[:, None] * stride_gek + offs_p[None, :] * stride_gep,
                mask=mask, other=0.0,
            ).to(tl.float32)
        if HAS_GRAD_LOGITS:
            if POOL == 0:
                g += grad_y[:, None] * inv_hw
            else:
                e = tl.load(evid_base + offs_k[:, None] * HW + offs_p[None, :], mask=mask, other=0.0)
                if POOL == 1:
                    g += tl.where(e == y[:, None], grad_y[:, None], 0.0)
                else:
                    # softmax_p(E/T) = exp((E_p - y)/T)/P: E_p - y <= T log P, so exp cannot overflow
                    g += grad_y[:, None] * tl.exp((e - y[:, None]) * inv_temperature) * inv_hw
        tl.store(out_base + offs_k[:, None] * HW + offs_p[None, :], g, mask=mask)


@triton.jit
def _gather_relu_kernel(
    evidence_ptr, targets_ptr, out_ptr,
    K, HW,
    stride_eb, stride_ek, stride_ep,
    BLOCK_P: tl.constexpr,
):
    """lowres[b, p] = max(E[b, targets[b], p], 0) in float32; one program per image."""
    pid_b = tl.program_id(0).to(tl.int64)
    target = tl.load(targets_ptr + pid_b).to(tl.int64)
    valid = (target >= 0) & (target < K)  # never read outside the evidence, whatever the caller passes
    src = evidence_ptr + pid_b * stride_eb + target * stride_ek
    for p0 in range(0, HW, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        p_mask = offs_p < HW
        e = tl.load(src + offs_p * stride_ep, mask=p_mask & valid, other=0.0).to(tl.float32)
        # NaN stays NaN, as torch.relu (a GPU's plain max would turn it into 0)
        tl.store(out_ptr + pid_b * HW + offs_p, tl.maximum(e, 0.0, propagate_nan=tl.PropagateNan.ALL), mask=p_mask)


# ----------------------------------------------------------------------------------------------- helpers
def _new_output(shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Every kernel output is allocated here, uninitialised: the kernels overwrite all of it (the tests
    swap this for a NaN-filled allocation to prove it)."""
    return torch.empty(shape, device=device, dtype=torch.float32)


def _pow2(n: int, low: int, high: int) -> int:
    """The power of two >= n, clamped to [low, high]."""
    return max(low, min(high, triton.next_power_of_2(max(int(n), 1))))


def _head_blocks(K: int, C: int, HW: int, on_gpu: bool) -> tuple[int, int, int, int]:
    """(BLOCK_K, BLOCK_C, BLOCK_P, num_warps). Every block >= 16 so tl.dot also compiles on a GPU.

    GPU: small K (SoftCAM's usual 2-5 classes) is bandwidth-bound, so one class block covers all
    classes and the pixel tile is wide (features read once, coalesced); large K (ImageNet's 1000) is
    compute-bound and gets 128-class tiles. The interpreter pays per program-step, so it gets the
    largest blocks that fit the problem.
    """
    if not on_gpu:
        return _pow2(K, 16, 64), _pow2(C, 16, 128), _pow2(HW, 16, 256), 4
    block_k = _pow2(K, 16, 128 if K >= 256 else 64)
    block_p = _pow2(HW, 16, 256 if block_k <= 32 else 128)
    # Channel step: operand tiles of (block_k + block_p) × block_c float32 per pipeline stage, 16 KiB for the
    # bandwidth-bound small-K shapes (keeps registers < 200, several programs per SM), 32 KiB for the
    # compute-bound large-K tiles (longer MMA chains); 8 warps there avoid register spills (checked by
    # compiling for sm_90: 128×64 tiles with 4 warps spill).
    budget = (8192 if block_k >= 128 else 4096) // (block_k + block_p)
    block_c = max(16, min(64, 1 << (budget.bit_length() - 1)))  # largest power of two within budget
    num_warps = 8 if block_k >= 128 else 4
    return block_k, block_c, block_p, num_warps


def _dot_precision(features: Tensor) -> str:
    """Follow PyTorch's convolution policy on a GPU (TF32 unless disabled); IEEE float32 elsewhere."""
    if gpu_geometry(features) and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"


def _pixel_stride(features: Tensor) -> int | None:
    """The stride of the flattened pixel index p = i·w + j if the (h, w) dims flatten without a copy."""
    _, _, h, w = features.shape
    sh, sw = features.stride(2), features.stride(3)
    if h == 1:
        return sw
    if w == 1:
        return sh
    if sh == w * sw:
        return sw
    return None


# ----------------------------------------------------------------------------------------------- launchers
#: a slice of the split head walks at least this many channels, and enough that its partial evidence
#: (BLOCK_K x pixels float32, written and read back) is at most half the features it reads
_MIN_CHUNK = 32
_SPLIT_ALIGN = 32


@dataclass(frozen=True)
class HeadPlan:
    """Launch geometry of the forward: class blocks of BLOCK_K, pixel tiles of BLOCK_P inside each program;
    grid (B · class_blocks,) fused, or (B · class_blocks, split.parts) + a reduce launch (B · class_blocks,)."""

    batch: int
    class_blocks: int
    block_k: int
    block_p: int
    split: ChannelSplit

    @property
    def grid(self) -> tuple[int, ...]:
        programs = self.batch * self.class_blocks
        return (programs, self.split.parts) if self.split.split else (programs,)

    def as_dict(self) -> dict[str, Any]:
        return {"grid": list(self.grid), "block_k": self.block_k, "block_p": self.block_p, **self.split.as_dict()}


def plan(features: Tensor, classes: int) -> HeadPlan:
    """The forward's grid for (B, C, h, w) features and K classes. Few classes (SoftCAM's 2-5) fit one class
    block, so the natural grid is B programs: at B < 2 × SM count (queried; 132 in the interpreter) the
    channel reduction is split into slices (`fastcam.kernels._launch.channel_split`), each slice's
    evidence written to a workspace and summed in slice order by a reduce launch that also pools."""
    B, C, h, w = features.shape
    block_k, _, block_p, _ = _head_blocks(classes, C, h * w, gpu_geometry(features))
    class_blocks = triton.cdiv(classes, block_k)
    min_chunk = max(_MIN_CHUNK, 2 * block_k * 4 // features.element_size())
    split = _launch.channel_split(B * class_blocks, C, _launch.sm_count(features.device),
                                  min_chunk=min_chunk, align=_SPLIT_ALIGN)
    return HeadPlan(B, class_blocks, block_k, block_p, split)


def _head_forward(features: Tensor, weight: Tensor, bias: Tensor | None, pool: str, temperature: float) -> tuple[Tensor, Tensor]:
    """Launch the forward (fused, or split + reduce). weight is (K, C). Returns (logits (B,K), evidence
    (B,K,h,w)) float32."""
    B, C, h, w = features.shape
    K = weight.shape[0]
    HW = h * w
    geometry = plan(features, K)
    pixel_stride = _pixel_stride(features)
    evidence = _new_output((B, K, h, w), features.device)
    logits = _new_output((B, K), features.device)
    feature_args = (features.stride(0), features.stride(1), features.stride(2),
                    pixel_stride if pixel_stride is not None else features.stride(3))
    blocks = dict(BLOCK_K=geometry.block_k, BLOCK_P=geometry.block_p)
    with launch_guard(features):
        if not geometry.split.split:
            _evidence_head_fwd_kernel[geometry.grid](
                features, weight, bias if bias is not None else weight, evidence, logits,
                C, C, K, HW, w, geometry.class_blocks,
                *feature_args,
                weight.stride(0), weight.stride(1),
                1.0 / HW, temperature, 1.0 / temperature,
                POOL=_POOL_CODE[pool], HAS_BIAS=bias is not None, FLAT_PIXELS=pixel_stride is not None,
                INPUT_PRECISION=_dot_precision(features), **blocks,
            )
            return logits, evidence
        partials = _launch.workspace((geometry.split.parts, B, K, HW), torch.float32, features.device)
        _evidence_partial_kernel[geometry.grid](
            features, weight, partials,
            C, geometry.split.chunk, K, HW, w, geometry.class_blocks,
            *feature_args,
            weight.stride(0), weight.stride(1),
            partials.stride(0), partials.stride(1),
            FLAT_PIXELS=pixel_stride is not None, INPUT_PRECISION=_dot_precision(features), **blocks,
        )
        # the reduce's pooling epilogue (lse: expm1 series) is register-hungry: (BLOCK_K, ~1,024 / BLOCK_K)
        # tiles, 8 values a thread (2,048-value tiles on 4 warps spilled when compiled for sm_90)
        reduce_p = max(16, min(geometry.block_p, 1024 // geometry.block_k))
        _evidence_reduce_kernel[(B * geometry.class_blocks,)](
            partials, bias if bias is not None else weight, evidence, logits,
            K, HW, geometry.class_blocks, geometry.split.parts,
            partials.stride(0), partials.stride(1),
            1.0 / HW, temperature, 1.0 / temperature,
            POOL=_POOL_CODE[pool], HAS_BIAS=bias is not None,
            BLOCK_K=geometry.block_k, BLOCK_P=reduce_p, num_warps=8 if geometry.block_k * reduce_p > 1024 else 4,
        )
    return logits, evidence


def _evidence_gradient(
    evidence: Tensor, logits: Tensor, grad_logits: Tensor | None, grad_evidence: Tensor | None,
    pool: str, temperature: float,
) -> Tensor:
    """G (B, K, h·w) float32: the total gradient reaching the evidence maps (see the module docstring)."""
    B, K, h, w = evidence.shape
    HW = h * w
    on_gpu = evidence.is_cuda
    block_k = _pow2(K, 16, 32 if on_gpu else 64)
    block_p = _pow2(HW, 16, 128 if on_gpu else 1024)
    num_k_blocks = triton.cdiv(K, block_k)
    out = _new_output((B, K, HW), evidence.device)
    ge_strides = (0, 0, 0)
    if grad_evidence is not None:
        if _pixel_stride(grad_evidence) is None:
            grad_evidence = grad_evidence.contiguous()
        ge_strides = (grad_evidence.stride(0), grad_evidence.stride(1), _pixel_stride(grad_evidence))
    gy_strides = (grad_logits.stride(0), grad_logits.stride(1)) if grad_logits is not None else (0, 0)
    with launch_guard(evidence):
        _evidence_grad_kernel[(B * num_k_blocks,)](
            evidence, logits,
            grad_logits if grad_logits is not None else logits,
            grad_evidence if grad_evidence is not None else evidence,
            out,
            K, HW, num_k_blocks,
            *gy_strides, *ge_strides,
            1.0 / HW, 1.0 / temperature,
            POOL=_POOL_CODE[pool],
            HAS_GRAD_LOGITS=grad_logits is not None, HAS_GRAD_EVIDENCE=grad_evidence is not None,
            BLOCK_K=block_k, BLOCK_P=block_p,
        )
    return out


class _EvidenceHeadFunction(torch.autograd.Function):
    """Autograd wrapper: fused Triton forward; backward = Triton evidence-gradient kernel + two GEMMs."""

    @staticmethod
    def forward(ctx: Any, features: Tensor, weight: Tensor, bias: Tensor | None, pool: str, temperature: float) -> tuple[Tensor, Tensor]:
        logits, evidence = _head_forward(features, weight, bias, pool, temperature)
        ctx.save_for_backward(features, weight, evidence, logits)
        ctx.pool, ctx.temperature, ctx.has_bias = pool, temperature, bias is not None
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return logits, evidence

    @staticmethod
    @torch.autograd.function.once_differentiable  # the backward's kernel has no backward of its own
    def backward(ctx: Any, grad_logits: Tensor | None, grad_evidence: Tensor | None) -> tuple[Tensor | None, ...]:
        features, weight, evidence, logits = ctx.saved_tensors
        need_features, need_weight, need_bias = ctx.needs_input_grad[:3]
        if grad_logits is None and grad_evidence is None:
            return None, None, None, None, None
        grad = _evidence_gradient(evidence, logits, grad_logits, grad_evidence, ctx.pool, ctx.temperature)
        # float32 GEMMs even if backward() is called inside an autocast region
        with torch.autocast(device_type=features.device.type, enabled=False):
            grad_features, grad_weight, grad_bias = _parameter_gradients(
                grad, features, weight, need_features, need_weight, need_bias and ctx.has_bias, ctx.bias_dtype
            )
        return grad_features, grad_weight, grad_bias, None, None


def _parameter_gradients(
    grad: Tensor, features: Tensor, weight: Tensor, need_features: bool, need_weight: bool, need_bias: bool,
    bias_dtype: torch.dtype | None,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """dA, dW, dbias from G (B, K, h·w) float32 (see the module docstring), in the inputs' dtypes."""
    B, C, h, w = features.shape
    grad_features = grad_weight = grad_bias = None
    if need_features:
        # dA[b, c, p] = sum_k W[k, c] G[b, k, p]
        grad_features = torch.matmul(weight.float().t(), grad).reshape(B, C, h, w).to(features.dtype)
    if need_weight:
        # dW[k, c] = sum_{b, p} G[b, k, p] A[b, c, p]
        grad_weight = torch.einsum("bkp,bcp->kc", grad, features.float().reshape(B, C, h * w)).to(weight.dtype)
    if need_bias:
        grad_bias = grad.sum(dim=(0, 2)).to(bias_dtype)
    return grad_features, grad_weight, grad_bias


# ----------------------------------------------------------------------------------------------- public API
def evidence_head(
    features: Tensor, weight: Tensor, bias: Tensor | None, pool: str = "avg", temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    r"""Fused SoftCAM evidence head: (logits (B, K) float32, evidence (B, K, h, w) float32).

    E = W A + bias per pixel (a 1×1 convolution), y = pool_p(E) with pool "avg" (mean), "max" or "lse"
    (T log mean_p exp(E_p / T), computed stably), all in one Triton kernel with float32 accumulation.
    Differentiable with respect to features, weight and bias (gradients from both the logits and the
    evidence, e.g. an ElasticNet penalty on E).

    Args:
        features: (B, C, h, w) float32/float16/bfloat16, any strides (channels_last, sliced, ...).
            float64 features are not a kernel dtype: they take the torch path in float64 (F.conv2d +
            `pool_evidence`), returning float64 logits and evidence.
        weight: (K, C), or a 1×1 convolution's (K, C, 1, 1).
        bias: (K,) or None.
        pool: "avg" | "max" | "lse".
        temperature: T > 0 of the "lse" pooling (ignored by the others).
    """
    _, temperature = check_pool(pool, temperature)
    weight, bias = check_head_inputs(features, weight, bias)
    if features.dtype == torch.float64:
        # The kernel accumulates in float32; float64 (a precision study, never the fast path) takes the
        # torch reference in float64, so backend="auto" on a float64 CUDA model still works and loses nothing.
        return _torch_evidence_head(features, weight, bias, pool, temperature)
    return _EvidenceHeadFunction.apply(features, weight, bias, pool, temperature)


def gather_relu(evidence: Tensor, targets: Tensor) -> Tensor:
    """lowres[b] = ReLU(evidence[b, targets[b]]) as (B, h, w) float32, by a small Triton kernel.

    Targets are assumed validated (see `softcam_maps`); an out-of-range one reads nothing (zeros).
    """
    B, K, h, w = evidence.shape
    HW = h * w
    pixel_stride = _pixel_stride(evidence)
    if pixel_stride is None:
        evidence = evidence.contiguous()
        pixel_stride = _pixel_stride(evidence)
    lowres = _new_output((B, h, w), evidence.device)
    block_p = _pow2(HW, 16, 1024 if evidence.is_cuda else 4096)
    with launch_guard(evidence):
        _gather_relu_kernel[(B,)](
            evidence, targets, lowres, K, HW,
            evidence.stride(0), evidence.stride(1), pixel_stride,
            BLOCK_P=block_p,
        )
    return lowres


def softcam_maps(
    evidence: Tensor, targets: Tensor, size: tuple[int, int], *, check_targets: bool = True
) -> tuple[Tensor, Tensor]:
    """SoftCAM explanation maps of the requested classes: (lowres (B, h, w), maps (B, H, W)), float32.

    lowres = ReLU(E[b, t_b]) (Triton gather + ReLU); maps = bilinear upsampling (align_corners=False) to
    `size`, divided by each map's max (an all-zero map stays zero), by the shared Triton kernel
    `fastcam.kernels.upsample_normalize.upsample_normalize`.

    Args:
        evidence: (B, K, h, w) signed class evidence, float32/float16/bfloat16, any strides.
        targets: (B,) integer class indices in [0, K).
        size: the input size (H, W).
        check_targets: validate the targets' range (one host sync); pass False if already validated.
    """
    if not isinstance(evidence, Tensor) or evidence.dim() != 4:
        raise ValueError(f"evidence must be a 4-D (B, K, h, w) tensor, got {getattr(evidence, 'shape', type(evidence).__name__)}")
    if evidence.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"evidence must be float32, float16 or bfloat16, got {evidence.dtype}")
    if any(s == 0 for s in evidence.shape):
        raise ValueError(f"evidence must be non-empty, got shape {tuple(evidence.shape)}")
    size = check_size(size)
    check_class_targets(targets, evidence.shape[0], evidence.shape[1], evidence.device, check_range=check_targets)
    lowres = gather_relu(evidence, targets)
    maps = _new_output((evidence.shape[0], *size), evidence.device)
    return lowres, upsample_normalize(lowres, size, out=maps)



__all__ = [
    "HeadPlan",
    "POOLS",
    "evidence_head",
    "gather_relu",
    "plan",
    "softcam_maps",
]

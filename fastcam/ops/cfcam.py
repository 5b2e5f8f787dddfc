r"""CF-CAM's cluster filter and channel weighting (steps 3–4 of `fastcam.methods.cfcam`): the torch reference
of `fastcam.kernels.cfcam_filter` and the product backend on CPU.

Given gradients $G$ (B, C, h, w) and per-channel labels (B, C) (`IMPORTANT` = -2, `NOISE` = -1, cluster
ids 0, 1, ...), each image's channel weights are

$$ s_c = \begin{cases} \bar G_c = \frac1{hw}\sum_{ij} G_c(i,j) & c \text{ important} \\
                        w_k = \mathrm{mean}(K_k \star M_k),\ M_k = \frac1{|k|}\sum_{c' \in k} G_{c'} & c \in \text{cluster } k
         \end{cases}, \qquad \alpha = \mathrm{softmax}_{c \notin \text{noise}}(s), \quad \alpha_{\text{noise}} = 0 $$

with $K_k$ a truncated Gaussian ("paper") or the released code's map-sized spatial × range kernel
("reference"); see `cluster_filter_weights`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from fastcam.ops._checks import check_activations, check_channel_labels, check_choice, check_real
from fastcam.ops.combine import accumulation

#: label of an important (high-norm) channel: keeps its own mean gradient, never clustered
IMPORTANT = -2
#: label of a channel DBSCAN calls noise: dropped from the explanation
NOISE = -1

VARIANTS = ("paper", "reference")
#: default filter sigma: the paper variant's Gaussian std, the reference variant's spatial std (its code's 5)
DEFAULT_SIGMA = {"paper": 1.0, "reference": 5.0}
#: the released code's range sigma and the constant added to the kernel's sum before normalising
REFERENCE_RANGE_SIGMA = 0.1
REFERENCE_NORM_EPS = 1e-6


def window_matrix(size: int, kernel: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(kernel, size) 0/1 matrix R with R[a, r] = 1 iff input index r is read by tap a of a 'same'
    correlation of a length-`size` signal with a length-`kernel` kernel under zero padding.

    PyTorch's padding='same' pads (kernel-1)//2 before and the rest after, so output i reads input
    i + a - (kernel-1)//2 at tap a. Summed over all outputs i in [0, size), tap a therefore sees the
    inputs r in [a - lead, a - lead + size - 1] ∩ [0, size - 1].
    """
    lead = (kernel - 1) // 2
    taps = torch.arange(kernel, device=device).unsqueeze(1)
    inputs = torch.arange(size, device=device).unsqueeze(0)
    offset = inputs - taps + lead
    return ((offset >= 0) & (offset < size)).to(dtype)


def gaussian_taps(sigma: float, truncate: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """scipy.ndimage's 1-D Gaussian kernel: exp(-t²/(2σ²)) for |t| <= ⌊truncate·σ + 0.5⌋, summing to 1."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    taps = torch.exp(-0.5 * (t / sigma) ** 2)
    return (taps / taps.sum()).to(dtype)


def gaussian_coverage(height: int, width: int, sigma: float, truncate: float, *, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu") -> Tensor:
    r"""(h, w) map c with $\mathrm{mean}(K_\sigma \star M) = \frac1{hw}\langle M, c\rangle$ for every map M.

    The zero-padded 'same' Gaussian filter is linear, so the mean of the filtered map is a fixed linear
    functional of the map: $c = R_h^\top k \otimes R_w^\top k$, where k is the 1-D kernel and R the
    window matrices (`window_matrix`); c(p) is the total kernel mass that pixel p sends to the output
    grid (1 in the interior, less within `radius` of the border). `gaussian_coverage_nd` for any rank.
    """
    return gaussian_coverage_nd((height, width), sigma, truncate, dtype=dtype, device=device)


def gaussian_coverage_nd(shape: Sequence[int], sigma: float, truncate: float, *, dtype: torch.dtype = torch.float32,
                         device: torch.device | str = "cpu") -> Tensor:
    r"""`gaussian_coverage` for maps of any rank: (d, h, w) volumes get
    $c = R_d^\top k \otimes R_h^\top k \otimes R_w^\top k$ (the separable Gaussian of scipy's
    `gaussian_filter`, the same σ and radius along every axis), so
    $\mathrm{mean}(K_\sigma \star M) = \langle M, c\rangle / \prod_i n_i$."""
    taps = gaussian_taps(sigma, truncate, torch.float64, torch.device(device))
    coverage = torch.ones((), dtype=torch.float64, device=taps.device)
    for size in shape:
        axis = window_matrix(int(size), taps.numel(), torch.float64, taps.device).T @ taps
        coverage = coverage.unsqueeze(-1) * axis
    return coverage.to(dtype)


def reference_filtered_mean(maps: Tensor, spatial_sigma: float = 5.0, range_sigma: float = REFERENCE_RANGE_SIGMA,
                            *, dims: int = 2) -> Tensor:
    r"""Mean of the released code's "bilateral" filter output, for (..., h, w) maps -> (...) (`dims=3`:
    (..., d, h, w) volumes, the same kernel in 3-D).

    Kernel (the size of the map, centred at (h/2, w/2), one per map):
    $K = S \odot e^{-(M - \bar M)^2 / (2\sigma_r^2)}$, $K \leftarrow K / (\sum K + 10^{-6})$,
    $S(i,j) = e^{-((i-h/2)^2 + (j-w/2)^2)/(2\sigma_s^2)}$; output $\tilde M$ = `F.conv2d(M, K, padding="same")`
    (in 3-D: $S(i,j,l)$ over the three centred coordinates and `F.conv3d`).
    Only the mean of $\tilde M$ is used, and it is exact to write it as
    $\frac1{hw}\sum_{a,b} K(a,b)\, W(a,b)$ with $W = R_h M R_w^\top$ the sum of M over the window that
    tap (a, b) reads (`window_matrix`, applied along every axis): O(hw) per map instead of the
    convolution's O((hw)²).
    """
    if dims not in (2, 3) or maps.dim() < dims:
        raise ValueError(f"reference_filtered_mean takes dims=2 or 3 trailing spatial dims, got dims={dims} for {tuple(maps.shape)}")
    sizes = tuple(maps.shape[-dims:])
    axes = tuple(range(-dims, 0))
    dtype, device = maps.dtype, maps.device
    distance = torch.zeros((), dtype=dtype, device=device)
    for size in sizes:
        coordinate = torch.arange(size, device=device, dtype=dtype) - size / 2
        distance = distance.unsqueeze(-1) + coordinate**2
    spatial = torch.exp(-distance / (2 * spatial_sigma**2))
    centred = maps - maps.mean(dim=axes, keepdim=True)
    kernel = spatial * torch.exp(centred.square_().mul_(-1 / (2 * range_sigma**2)))
    window = maps
    for axis, size in zip(axes, sizes):  # W = M x_axis R for every axis: window sums of each tap
        window = (window.movedim(axis, -1) @ window_matrix(size, size, dtype, device).T).movedim(-1, axis)
    # normalising the kernel commutes with the weighted sum: divide the (...,) sums, not the (..., h, w) kernel
    weighted = (kernel * window).sum(dim=axes)
    return weighted / (kernel.sum(dim=axes) + REFERENCE_NORM_EPS) / math.prod(sizes)


def masked_softmax(scores: Tensor, keep: Tensor) -> Tensor:
    """Softmax over the entries where `keep` is True along dim 1; 0 elsewhere (a row with nothing kept is
    all zeros, not NaN)."""
    lowest = torch.finfo(scores.dtype).min
    peak = torch.where(keep, scores, lowest).amax(dim=1, keepdim=True)
    expd = torch.where(keep, torch.exp(scores - peak), torch.zeros((), dtype=scores.dtype, device=scores.device))
    return expd / expd.sum(dim=1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)


def filter_options(variant: str, sigma: float | None, range_sigma: float, truncate: float) -> tuple[float, float, float]:
    """Checked (sigma, range_sigma, truncate) of a CF-CAM filter, `sigma` None resolved to the variant's
    default; shared by the torch reference and the Triton kernel so that both refuse the same input."""
    check_choice("variant", variant, VARIANTS)
    sigma = check_real("sigma", DEFAULT_SIGMA[variant] if sigma is None else sigma, low=0, low_inclusive=False)
    range_sigma = check_real("range_sigma", range_sigma, low=0, low_inclusive=False)
    truncate = check_real("truncate", truncate, low=0, low_inclusive=True)
    return sigma, range_sigma, truncate


def cluster_filter_weights(
    gradients: Tensor,
    labels: Tensor,
    *,
    variant: str = "paper",
    sigma: float | None = None,
    range_sigma: float = REFERENCE_RANGE_SIGMA,
    truncate: float = 4.0,
) -> Tensor:
    r"""CF-CAM channel weights from gradients (B, C, h, w) (or (B, C, d, h, w) volumes: the same filters in
    3-D) and `channel_labels` (B, C) -> (B, C).

    Per image: important channels score their mean gradient $\bar G_c$; cluster k's channels all score
    $w_k$ = mean of the filtered cluster-mean gradient (see the module docstring; `sigma` None means
    1.0 for "paper", 5.0 — the spatial sigma — for "reference"); noise channels are excluded; the
    weights are the softmax of the scores over the kept channels (noise gets exactly 0).

    Vectorised over the batch and the clusters: cluster k's data goes to slot k of a (B, C, ...) buffer
    by scatter-add (cluster ids are < C), so no host sync and no Python loop over images or clusters.
    "paper": the filter is linear, so $w_k = \frac1{|k|}\sum_{c\in k} \frac1{hw}\langle G_c, c_\sigma\rangle$
    with the coverage map of `gaussian_coverage`. "reference": the kernel depends on $M_k$, so the
    mean maps are formed and `reference_filtered_mean` is applied to each slot.

    Computed in the gradients' accumulation dtype (float32, or float64 for float64 input). This is the
    torch reference of the fused Triton kernel `fastcam.kernels.cfcam_filter.cluster_filter_weights` (2-D
    only: `fastcam._backend.resolve_backend` sends volumes here).
    """
    sigma, range_sigma, truncate = filter_options(variant, sigma, range_sigma, truncate)
    check_activations(gradients, "gradients")  # (B, C, h, w) or (B, C, d, h, w)
    check_channel_labels(labels, gradients)  # the Triton kernel refuses the same labels
    grad = accumulation(gradients.detach())
    batch, channels = grad.shape[:2]
    spatial_shape = tuple(grad.shape[2:])
    spatial = tuple(range(2, grad.dim()))
    clustered = labels >= 0
    slot = torch.where(clustered, labels, 0)  # cluster k -> slot k; others masked out below
    member = clustered.to(grad.dtype)
    sizes = torch.zeros(batch, channels, dtype=grad.dtype, device=grad.device).scatter_add_(1, slot, member)

    if variant == "paper":
        coverage = gaussian_coverage_nd(spatial_shape, sigma, truncate, dtype=grad.dtype, device=grad.device)
        per_channel = (grad * coverage).sum(dim=spatial) / math.prod(spatial_shape)
        sums = torch.zeros_like(sizes).scatter_add_(1, slot, per_channel * member)
        cluster_scores = sums / sizes.clamp_min(1)
    else:
        flat = grad.flatten(2) * member.unsqueeze(2)
        index = slot.unsqueeze(2).expand(-1, -1, flat.shape[2])
        mean_maps = torch.zeros_like(flat).scatter_add_(1, index, flat) / sizes.clamp_min(1).unsqueeze(2)
        cluster_scores = reference_filtered_mean(mean_maps.view_as(grad), sigma, range_sigma, dims=len(spatial))

    scores = torch.where(labels == IMPORTANT, grad.mean(dim=spatial), cluster_scores.gather(1, slot))
    return masked_softmax(scores, labels != NOISE)

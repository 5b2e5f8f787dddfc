r"""CF-CAM (He, Pan & Yao, arXiv 2504.00060): Grad-CAM with DBSCAN channel clustering and filtered
cluster gradients, batched over images.

For one image with activations $A \in \mathbb{R}^{C\times h\times w}$ and gradients
$G = \partial y^t / \partial A$:

1. **Importance.** $n_c = \lVert A_c \rVert_2$; channels with $n_c \ge P_{75}(n)$ (numpy's linear
   percentile) are *important* and keep their Grad-CAM weight $\bar G_c = \frac1{hw}\sum_{ij} G_c(i,j)$.
2. **Clustering.** The $m$ remaining channels, as points $A_c \in \mathbb{R}^{hw}$ in channel order, are
   clustered by DBSCAN (Euclidean, `<=` eps, decided in float64) with
   $\varepsilon = \max(Q_{0.25}\{\lVert A_i - A_j\rVert : i \ne j\}, 10^{-5})$ and
   $\text{min\_samples} = \max(2, \lfloor 0.05\, m \rfloor)$. Noise channels are dropped.
3. **Cluster filtering.** For cluster $k$, $M_k = \frac1{|k|}\sum_{c\in k} G_c$ is filtered,
   $\tilde M_k = K_k \star M_k$ ('same' size, zero padding), and every channel of the cluster gets
   $w_k = \mathrm{mean}(\tilde M_k)$. The filter $K_k$ is
   - `variant="paper"`: a normalised Gaussian of std `sigma` (default 1), radius
     $\lfloor \text{truncate}\cdot\sigma + 0.5\rfloor$ (scipy's `gaussian_filter` kernel);
   - `variant="reference"`: the released code's map-sized kernel
     $K(i,j) \propto e^{-((i-h/2)^2+(j-w/2)^2)/(2\cdot 5^2)}\, e^{-(M_k(i,j)-\bar M_k)^2/(2\cdot 0.1^2)}$,
     divided by (its sum $+10^{-6}$), applied as `F.conv2d(M, K, padding="same")`.
4. **Combine.** $\alpha = \mathrm{softmax}$ of the weights over the kept (important + clustered)
   channels, $L = \mathrm{ReLU}(\sum_c \alpha_c A_c)$, then the shared upsample + max-normalise.

The computation is split so a fused kernel can take over its second half: `channel_labels` gives
(B, C) int64 labels (`IMPORTANT` = -2, `NOISE` = -1, clusters 0, 1, ...), and
`cluster_filter_weights(gradients, labels, ...)` is the vectorised torch reference for steps 3–4's
weights (no per-image or per-cluster Python loop).
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor, nn

from fastcam._backend import resolve_backend
from fastcam.cluster import BACKENDS as CLUSTER_BACKENDS
from fastcam.cluster import dbscan, pairwise_quantile
from fastcam.methods._combine import accumulation
from fastcam.methods.base import BaseCAM

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


def _check_number(name: str, value: object, *, low: float, low_inclusive: bool, high: float = math.inf) -> float:
    """A finite real hyperparameter within [low or (low, high]; a clear TypeError/ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    above = value >= low if low_inclusive else value > low
    if not (math.isfinite(value) and above and value <= high):
        bound = f"{'>=' if low_inclusive else '>'} {low}" + ("" if high == math.inf else f" and <= {high}")
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------- step 1–2
def importance_mask(norms: Tensor, percentile: float) -> Tensor:
    """(B, C) channel norms -> (B, C) bool, True where the norm is >= the `percentile`-th percentile.

    The percentile is numpy's default ("linear"): virtual index v = (C - 1)·p/100, k = ⌊v⌋,
    threshold = lerp(s_k, s_{k+1}, v - k) over the sorted norms s, with numpy's two-sided lerp
    (torch.lerp uses the same formula). The threshold never exceeds s_⌈v⌉, so at least C - ⌈v⌉
    channels are important in every image; `channel_labels` relies on that bound to size its
    clustering batch without a host sync.
    """
    count = norms.shape[1]
    virtual = (count - 1) * (percentile / 100.0)
    low = min(math.floor(virtual), count - 1)
    high = min(low + 1, count - 1)
    ordered = norms.sort(dim=1).values
    upper = ordered[:, high]
    threshold = torch.lerp(ordered[:, low], upper, virtual - low)
    threshold = torch.minimum(threshold, upper)  # guards the bound above against any rounding
    return norms >= threshold.unsqueeze(1)


def _max_remaining(channels: int, percentile: float) -> int:
    """Upper bound on the non-important channels of any image (see `importance_mask`)."""
    virtual = (channels - 1) * (percentile / 100.0)
    return min(math.ceil(virtual), channels)


def channel_labels(
    activations: Tensor,
    *,
    importance_percentile: float = 75.0,
    eps_percentile: float = 25.0,
    eps_floor: float = 1e-5,
    min_samples_fraction: float = 0.05,
    min_samples_floor: int = 2,
    cluster_backend: str = "auto",
) -> Tensor:
    r"""Per-channel CF-CAM labels for a batch: (B, C, h, w) activations -> (B, C) int64.

    `IMPORTANT` (-2) for channels whose L2 norm is >= the `importance_percentile`-th percentile of the
    image's channel norms; the other m channels are clustered per image by
    `fastcam.cluster.dbscan` (all images in one call) with
    eps = max(`pairwise_quantile`(points, eps_percentile / 100), eps_floor) and
    min_samples = max(min_samples_floor, ⌊min_samples_fraction · m⌋), giving `NOISE` (-1) or a
    cluster id 0, 1, ... numbered as scikit-learn does on the remaining channels in channel order.

    The remaining channels are packed, in channel order, into a (B, N, hw) batch with a validity mask:
    N = ⌈(C-1)·p/100⌉ bounds m for every image (ties in the norms only make m smaller), so no host sync
    is needed to size it. An image with m < 2 has no pairwise distance: its eps is `eps_floor`
    (the released code would crash there); its single channel, if any, is noise unless
    min_samples_floor is 1.
    """
    if activations.dim() != 4:
        raise ValueError(f"activations must be 4-D (B, C, h, w), got shape {tuple(activations.shape)}")
    _check_number("importance_percentile", importance_percentile, low=0, low_inclusive=True, high=100)
    _check_number("eps_percentile", eps_percentile, low=0, low_inclusive=True, high=100)
    _check_number("eps_floor", eps_floor, low=0, low_inclusive=False)
    _check_number("min_samples_fraction", min_samples_fraction, low=0, low_inclusive=True)
    batch, channels = activations.shape[:2]
    points = accumulation(activations.detach()).flatten(2)  # (B, C, hw)
    important = importance_mask(torch.linalg.vector_norm(points, dim=2), importance_percentile)
    labels = torch.full((batch, channels), IMPORTANT, dtype=torch.int64, device=activations.device)
    size = _max_remaining(channels, importance_percentile)
    if size == 0:  # every channel is important
        return labels

    # remaining channels first, in channel order (stable sort), then the important ones as padding
    order = torch.sort(important.to(torch.uint8), dim=1, stable=True).indices[:, :size]
    packed = points.gather(1, order.unsqueeze(2).expand(-1, -1, points.shape[2]))
    remaining = (~important).sum(dim=1)  # m per image
    slot = torch.arange(size, device=activations.device)
    valid = slot.unsqueeze(0) < remaining.unsqueeze(1)

    # min_samples = max(floor, int(fraction * m)), the product in float64 as Python does it
    min_samples = torch.floor(remaining.to(torch.float64) * min_samples_fraction).to(torch.int64)
    min_samples = min_samples.clamp_min(min_samples_floor)

    eps = torch.full((batch,), float(eps_floor), dtype=torch.float64, device=activations.device)
    if size >= 2:
        has_pairs = remaining >= 2
        # images without a pair get two (finite, real) stand-in points so the batched call is defined;
        # their quantile is discarded below
        quantile_valid = valid | (~has_pairs.unsqueeze(1) & (slot < 2).unsqueeze(0))
        quantile = pairwise_quantile(packed, eps_percentile / 100.0, quantile_valid)
        eps = torch.where(has_pairs, quantile.clamp_min(eps_floor), eps)

    clusters = dbscan(packed, eps, min_samples, backend=cluster_backend, valid=valid)
    labels.scatter_(1, order, torch.where(valid, clusters, IMPORTANT))
    return labels


# ---------------------------------------------------------------------------------------------- step 3–4
def _window_matrix(size: int, kernel: int, dtype: torch.dtype, device: torch.device) -> Tensor:
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


def _gaussian_taps(sigma: float, truncate: float, dtype: torch.dtype, device: torch.device) -> Tensor:
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
    window matrices (`_window_matrix`); c(p) is the total kernel mass that pixel p sends to the output
    grid (1 in the interior, less within `radius` of the border).
    """
    taps = _gaussian_taps(sigma, truncate, torch.float64, torch.device(device))
    rows = _window_matrix(height, taps.numel(), torch.float64, taps.device).T @ taps
    cols = _window_matrix(width, taps.numel(), torch.float64, taps.device).T @ taps
    return torch.outer(rows, cols).to(dtype)


def reference_filtered_mean(maps: Tensor, spatial_sigma: float = 5.0, range_sigma: float = REFERENCE_RANGE_SIGMA) -> Tensor:
    r"""Mean of the released code's "bilateral" filter output, for (..., h, w) maps -> (...).

    Kernel (the size of the map, centred at (h/2, w/2), one per map):
    $K = S \odot e^{-(M - \bar M)^2 / (2\sigma_r^2)}$, $K \leftarrow K / (\sum K + 10^{-6})$,
    $S(i,j) = e^{-((i-h/2)^2 + (j-w/2)^2)/(2\sigma_s^2)}$; output $\tilde M$ = `F.conv2d(M, K, padding="same")`.
    Only the mean of $\tilde M$ is used, and it is exact to write it as
    $\frac1{hw}\sum_{a,b} K(a,b)\, W(a,b)$ with $W = R_h M R_w^\top$ the sum of M over the window that
    tap (a, b) reads (`_window_matrix`): O(hw) per map instead of the convolution's O((hw)²).
    """
    height, width = maps.shape[-2:]
    dtype, device = maps.dtype, maps.device
    x = torch.arange(height, device=device, dtype=dtype) - height / 2
    y = torch.arange(width, device=device, dtype=dtype) - width / 2
    spatial = torch.exp(-(x.unsqueeze(1) ** 2 + y.unsqueeze(0) ** 2) / (2 * spatial_sigma**2))
    centred = maps - maps.mean(dim=(-2, -1), keepdim=True)
    kernel = spatial * torch.exp(centred.square_().mul_(-1 / (2 * range_sigma**2)))
    window = _window_matrix(height, height, dtype, device) @ maps @ _window_matrix(width, width, dtype, device).T
    # normalising the kernel commutes with the weighted sum: divide the (...,) sums, not the (..., h, w) kernel
    weighted = torch.einsum("...ij,...ij->...", kernel, window)
    return weighted / (kernel.sum(dim=(-2, -1)) + REFERENCE_NORM_EPS) / (height * width)


def masked_softmax(scores: Tensor, keep: Tensor) -> Tensor:
    """Softmax over the entries where `keep` is True along dim 1; 0 elsewhere (a row with nothing kept is
    all zeros, not NaN)."""
    lowest = torch.finfo(scores.dtype).min
    peak = torch.where(keep, scores, lowest).amax(dim=1, keepdim=True)
    expd = torch.where(keep, torch.exp(scores - peak), torch.zeros((), dtype=scores.dtype, device=scores.device))
    return expd / expd.sum(dim=1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)


def cluster_filter_weights(
    gradients: Tensor,
    labels: Tensor,
    *,
    variant: str = "paper",
    sigma: float | None = None,
    range_sigma: float = REFERENCE_RANGE_SIGMA,
    truncate: float = 4.0,
) -> Tensor:
    r"""CF-CAM channel weights from gradients (B, C, h, w) and `channel_labels` (B, C) -> (B, C).

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
    torch reference for the fused Triton kernel (`fastcam.kernels`, issue 4).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if gradients.dim() != 4 or labels.shape != gradients.shape[:2]:
        raise ValueError(
            f"gradients must be (B, C, h, w) and labels (B, C); got {tuple(gradients.shape)} and {tuple(labels.shape)}"
        )
    sigma = DEFAULT_SIGMA[variant] if sigma is None else _check_number("sigma", sigma, low=0, low_inclusive=False)
    _check_number("range_sigma", range_sigma, low=0, low_inclusive=False)
    _check_number("truncate", truncate, low=0, low_inclusive=True)
    grad = accumulation(gradients.detach())
    batch, channels, height, width = grad.shape
    clustered = labels >= 0
    slot = torch.where(clustered, labels, 0)  # cluster k -> slot k; others masked out below
    member = clustered.to(grad.dtype)
    sizes = torch.zeros(batch, channels, dtype=grad.dtype, device=grad.device).scatter_add_(1, slot, member)

    if variant == "paper":
        coverage = gaussian_coverage(height, width, sigma, truncate, dtype=grad.dtype, device=grad.device)
        per_channel = (grad * coverage).sum(dim=(2, 3)) / (height * width)
        sums = torch.zeros_like(sizes).scatter_add_(1, slot, per_channel * member)
        cluster_scores = sums / sizes.clamp_min(1)
    else:
        flat = grad.flatten(2) * member.unsqueeze(2)
        index = slot.unsqueeze(2).expand(-1, -1, flat.shape[2])
        mean_maps = torch.zeros_like(flat).scatter_add_(1, index, flat) / sizes.clamp_min(1).unsqueeze(2)
        cluster_scores = reference_filtered_mean(mean_maps.view_as(grad), sigma, range_sigma)

    scores = torch.where(labels == IMPORTANT, grad.mean(dim=(2, 3)), cluster_scores.gather(1, slot))
    return masked_softmax(scores, labels != NOISE)


# ---------------------------------------------------------------------------------------------- method
class CFCAM(BaseCAM):
    r"""CF-CAM: Grad-CAM weights refined by DBSCAN channel clustering and filtered cluster gradients.

    See the module docstring for the maths. All images of a batch are clustered in one
    `fastcam.cluster.dbscan` call and weighted by one vectorised `cluster_filter_weights` call.

    Args:
        model, target_layer, backend: as for every `BaseCAM` method.
        variant: "paper" (default; a true Gaussian filter of std `sigma`) or "reference" (the authors'
            released code: the map-sized spatial × range kernel).
        importance_percentile: channels with L2 norm >= this percentile (0–100) are important (75).
        eps_percentile: DBSCAN eps is this percentile (0–100) of the pairwise distances (25) ...
        eps_floor: ... but at least this (1e-5).
        min_samples_fraction, min_samples_floor: min_samples = max(floor, ⌊fraction · m⌋) for m
            remaining channels (0.05 and 2).
        sigma: Gaussian std for "paper" (default 1.0, in feature-map cells), spatial std for
            "reference" (default 5.0).
        range_sigma: "reference" only: std of the range term (0.1).
        truncate: "paper" only: kernel radius = ⌊truncate · sigma + 0.5⌋ (4.0, scipy's default).
        cluster_backend: `fastcam.cluster.dbscan` backend: "auto" (torch on CUDA, scikit-learn on CPU),
            "torch", "sklearn", "cuml".
        gradient_noise: std of Gaussian noise added to the gradients before any weighting (robustness
            studies; 0 = none), through `BaseCAM`'s `gradient_noise` hook, so important and clustered
            channels alike see it. The released code adds its noise after the weights are computed,
            where it changes nothing; this does not copy that.
        generator: the noise's source: a `torch.Generator` on the activations' device (stored as
            `noise_generator`; its state advances), an int seed (a fresh generator on the activations'
            device each call: the same noise on every call with the same shapes), or None (torch's
            global RNG).

    Example:
        >>> with fastcam.CFCAM(model, "layer4", variant="reference") as cam:
        ...     maps = cam(images)            # (B, H, W) in [0, 1]
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str,
        *,
        variant: str = "paper",
        importance_percentile: float = 75.0,
        eps_percentile: float = 25.0,
        eps_floor: float = 1e-5,
        min_samples_fraction: float = 0.05,
        min_samples_floor: int = 2,
        sigma: float | None = None,
        range_sigma: float = REFERENCE_RANGE_SIGMA,
        truncate: float = 4.0,
        cluster_backend: str = "auto",
        gradient_noise: float = 0.0,
        generator: torch.Generator | int | None = None,
        backend: str | None = None,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if cluster_backend not in CLUSTER_BACKENDS:
            raise ValueError(f"cluster_backend must be one of {CLUSTER_BACKENDS}, got {cluster_backend!r}")
        if isinstance(min_samples_floor, bool) or not isinstance(min_samples_floor, numbers.Integral) or min_samples_floor < 1:
            raise ValueError(f"min_samples_floor must be an int >= 1, got {min_samples_floor!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            if isinstance(generator, bool) or not isinstance(generator, numbers.Integral):
                raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
        super().__init__(model, target_layer, backend=backend)
        self.variant = variant
        self.importance_percentile = _check_number("importance_percentile", importance_percentile, low=0, low_inclusive=True, high=100)
        self.eps_percentile = _check_number("eps_percentile", eps_percentile, low=0, low_inclusive=True, high=100)
        self.eps_floor = _check_number("eps_floor", eps_floor, low=0, low_inclusive=False)
        self.min_samples_fraction = _check_number("min_samples_fraction", min_samples_fraction, low=0, low_inclusive=True)
        self.min_samples_floor = int(min_samples_floor)
        self.sigma = DEFAULT_SIGMA[variant] if sigma is None else _check_number("sigma", sigma, low=0, low_inclusive=False)
        self.range_sigma = _check_number("range_sigma", range_sigma, low=0, low_inclusive=False)
        self.truncate = _check_number("truncate", truncate, low=0, low_inclusive=True)
        self.cluster_backend = cluster_backend
        self.gradient_noise = _check_number("gradient_noise", gradient_noise, low=0, low_inclusive=True)
        self.noise_generator = generator if isinstance(generator, torch.Generator) else None
        self.noise_seed = None if generator is None or isinstance(generator, torch.Generator) else int(generator)

    def __repr__(self) -> str:
        return (
            f"CFCAM(target_layer={self.layer_name!r}, variant={self.variant!r}, sigma={self.sigma}, "
            f"cluster_backend={self.cluster_backend!r}, backend={self.backend!r})"
        )

    @property
    def cluster_options(self) -> dict[str, Any]:
        """Keyword arguments of `channel_labels` for this explainer."""
        return dict(
            importance_percentile=self.importance_percentile,
            eps_percentile=self.eps_percentile,
            eps_floor=self.eps_floor,
            min_samples_fraction=self.min_samples_fraction,
            min_samples_floor=self.min_samples_floor,
            cluster_backend=self.cluster_backend,
        )

    @property
    def filter_options(self) -> dict[str, Any]:
        """Keyword arguments of `cluster_filter_weights` (and of a fused kernel replacing it)."""
        return dict(variant=self.variant, sigma=self.sigma, range_sigma=self.range_sigma, truncate=self.truncate)

    def _get_weights(self, *, images: Tensor, activations: Tensor, logits: Tensor, targets: Tensor) -> Tensor:
        if self.noise_seed is not None and self.noise_generator is None:
            # a generator must live on the tensors' device, so a seed becomes one here, afresh each call
            self.noise_generator = torch.Generator(device=activations.device).manual_seed(self.noise_seed)
            try:
                grad = self._gradients(logits, activations, targets)
            finally:
                self.noise_generator = None
        else:
            grad = self._gradients(logits, activations, targets)
        labels = channel_labels(activations.detach(), **self.cluster_options)
        if resolve_backend(self.backend, activations) == "triton":
            from fastcam.kernels import cfcam_filter  # imported lazily: triton is optional

            return cfcam_filter.cluster_filter_weights(grad, labels, **self.filter_options)
        return cluster_filter_weights(grad, labels, **self.filter_options)

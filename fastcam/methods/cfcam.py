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

The computation is split so a fused kernel can take over its second half: `channel_labels` (here) gives
(B, C) int64 labels (`IMPORTANT` = -2, `NOISE` = -1, clusters 0, 1, ...), and steps 3–4's weights are the
fused operation `cluster_filter_weights` (torch reference in `fastcam.ops.cfcam`, Triton kernel in
`fastcam.kernels.cfcam_filter`, chosen per call by `fastcam._backend.op`).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fastcam._backend import op
from fastcam.cluster import BACKENDS as CLUSTER_BACKENDS
from fastcam.cluster import quantile_dbscan
from fastcam.methods.base import CallContext, GradientCAM, OutputFn, ReshapeTransform, TargetLayers
from fastcam.ops import accumulation, check_choice, check_int, check_real
from fastcam.ops.cfcam import IMPORTANT, REFERENCE_RANGE_SIGMA, filter_options


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


@dataclass(frozen=True)
class ClusterOptions:
    """CF-CAM's channel clustering settings (steps 1–2); the defaults are the paper's. Checked when made
    (a TypeError/ValueError naming the field).

    Attributes:
        importance_percentile: channels whose L2 norm is >= this percentile (0–100) of the image's channel
            norms are important (75).
        eps_percentile: DBSCAN's eps is this percentile (0–100) of the remaining channels' pairwise
            distances (25) ...
        eps_floor: ... but at least this (> 0; 1e-5).
        min_samples_fraction: min_samples = max(min_samples_floor, ⌊min_samples_fraction · m⌋) for m
            remaining channels (0.05).
        min_samples_floor: the least min_samples (an int >= 1; 2).
        cluster_backend: the DBSCAN step's backend (`fastcam.cluster.quantile_dbscan`): "auto" and "torch"
            (the fixed-shape torch engine on every device: one host read per call; label for label
            scikit-learn's), "sklearn" (scikit-learn per image, on the CPU), "cuml" (untested: not
            installable on our machines).
    """

    importance_percentile: float = 75.0
    eps_percentile: float = 25.0
    eps_floor: float = 1e-5
    min_samples_fraction: float = 0.05
    min_samples_floor: int = 2
    cluster_backend: str = "auto"

    def __post_init__(self) -> None:
        checked = {
            "importance_percentile": check_real("importance_percentile", self.importance_percentile, low=0, high=100),
            "eps_percentile": check_real("eps_percentile", self.eps_percentile, low=0, high=100),
            "eps_floor": check_real("eps_floor", self.eps_floor, low=0, low_inclusive=False),
            "min_samples_fraction": check_real("min_samples_fraction", self.min_samples_fraction, low=0),
            "min_samples_floor": check_int("min_samples_floor", self.min_samples_floor, low=1),
            "cluster_backend": check_choice("cluster_backend", self.cluster_backend, CLUSTER_BACKENDS),
        }
        for name, value in checked.items():  # frozen: the checked (normalised) values replace the given ones
            object.__setattr__(self, name, value)


#: the paper's clustering settings (every default of `CFCAM` and `channel_labels`)
PAPER_CLUSTERING = ClusterOptions()


def channel_labels(activations: Tensor, options: ClusterOptions | None = None, **changes: Any) -> Tensor:
    r"""Per-channel CF-CAM labels for a batch: (B, C, h, w) (or (B, C, d, h, w)) activations -> (B, C) int64.

    `options` (default: the paper's `ClusterOptions()`), with `changes` (fields of `ClusterOptions`, e.g.
    `cluster_backend="sklearn"`) replaced, gives the settings named below.
    `IMPORTANT` (-2) for channels whose L2 norm is >= the `importance_percentile`-th percentile of the
    image's channel norms; the other m channels are clustered per image by
    `fastcam.cluster.quantile_dbscan` (all images in one call, the distances computed once) with
    eps = max(the eps_percentile-th percentile of the pairwise distances, eps_floor) and
    min_samples = max(min_samples_floor, ⌊min_samples_fraction · m⌋), giving `NOISE` (-1) or a
    cluster id 0, 1, ... numbered as scikit-learn does on the remaining channels in channel order.

    The remaining channels are packed, in channel order, into a (B, N, hw) batch with a validity mask:
    N = ⌈(C-1)·p/100⌉ bounds m for every image (ties in the norms only make m smaller), so no host sync
    is needed to size it. An image with m < 2 has no pairwise distance: its eps is `eps_floor`
    (the released code would crash there); its single channel, if any, is noise unless
    min_samples_floor is 1.
    """
    opts = dataclasses.replace(options or ClusterOptions(), **changes)  # checked when made
    if activations.dim() not in (4, 5):
        raise ValueError(f"activations must be (B, C, h, w) or (B, C, d, h, w), got shape {tuple(activations.shape)}")
    batch, channels = activations.shape[:2]
    points = accumulation(activations.detach()).flatten(2)  # (B, C, hw)
    important = importance_mask(torch.linalg.vector_norm(points, dim=2), opts.importance_percentile)
    labels = torch.full((batch, channels), IMPORTANT, dtype=torch.int64, device=activations.device)
    size = _max_remaining(channels, opts.importance_percentile)
    if size == 0:  # every channel is important
        return labels

    # remaining channels first, in channel order (stable sort), then the important ones as padding
    order = torch.sort(important.to(torch.uint8), dim=1, stable=True).indices[:, :size]
    packed = points.gather(1, order.unsqueeze(2).expand(-1, -1, points.shape[2]))
    remaining = (~important).sum(dim=1)  # m per image
    slot = torch.arange(size, device=activations.device)
    valid = slot.unsqueeze(0) < remaining.unsqueeze(1)

    # min_samples = max(floor, int(fraction * m)), the product in float64 as Python does it
    min_samples = torch.floor(remaining.to(torch.float64) * opts.min_samples_fraction).to(torch.int64)
    min_samples = min_samples.clamp_min(opts.min_samples_floor)

    # one distance computation for eps and the clustering; an image with fewer than two remaining
    # channels has no pairwise distance: its eps is eps_floor (the released code would crash there)
    clusters, _ = quantile_dbscan(packed, opts.eps_percentile / 100.0, min_samples, valid=valid,
                                  eps_floor=opts.eps_floor, backend=opts.cluster_backend)
    labels.scatter_(1, order, torch.where(valid, clusters, IMPORTANT))
    return labels


# ---------------------------------------------------------------------------------------------- method
class CFCAM(GradientCAM):
    r"""CF-CAM: Grad-CAM weights refined by DBSCAN channel clustering and filtered cluster gradients.

    From [He, Pan & Yao, CF-CAM, arXiv 2504.00060](https://arxiv.org/abs/2504.00060).

    See the module docstring for the maths. All images of a batch are clustered in one
    `fastcam.cluster.dbscan` call and weighted by one vectorised `cluster_filter_weights` call.
    Volumes (B, C, d, h, w) (Conv3d networks) take the same steps in 3-D: channels are points in
    R^{dhw}, the Gaussian is separable over d, h, w (scipy's 3-D `gaussian_filter`), the reference kernel
    is volume-sized; they run on the torch backend (the Triton kernel is 2-D).

    Args:
        variant: "paper" (default; a true Gaussian filter of std `sigma`) or "reference" (the authors'
            released code: the map-sized spatial × range kernel).
        importance_percentile: channels with L2 norm >= this percentile (0–100) are important (75).
        eps_percentile: DBSCAN eps is this percentile (0–100) of the pairwise distances (25) ...
        eps_floor: ... but at least this (1e-5).
        min_samples_fraction: min_samples = max(min_samples_floor, ⌊min_samples_fraction · m⌋) for m
            remaining channels (0.05) ...
        min_samples_floor: ... and at least this (2). The six clustering settings are the fields of
            `ClusterOptions` (`CFCAM.clustering`).
        sigma: Gaussian std for "paper" (default 1.0, in feature-map cells), spatial std for
            "reference" (default 5.0).
        range_sigma: "reference" only: std of the range term (0.1).
        truncate: "paper" only: kernel radius = ⌊truncate · sigma + 0.5⌋ (4.0, scipy's default).
        cluster_backend: the DBSCAN step's backend (`fastcam.cluster.quantile_dbscan`): "auto" and "torch"
            (the fixed-shape torch engine on every device: one host read per call; label for label
            scikit-learn's), "sklearn" (scikit-learn per image, on the CPU), "cuml" (untested: not
            installable on our machines).

    The other arguments (model, target_layer, backend, reshape_transform, output_fn, allow_train_mode,
    aug_smooth, eigen_smooth) are `BaseCAM`'s; smooth, smooth_sigma, gradient_noise and generator are
    `GradientCAM`'s: the noise enters before any weighting, so important and clustered channels alike see
    it (the released code adds its noise after the weights are computed, where it changes nothing; this
    does not copy that).

    Example:
        >>> with fastcam.CFCAM(model, "layer4", variant="reference") as cam:
        ...     maps = cam(images)            # (B, H, W) in [0, 1]
    """

    name = "cfcam"

    def __init__(
        self,
        model: nn.Module,
        target_layer: TargetLayers,
        *,
        variant: str = "paper",
        importance_percentile: float = PAPER_CLUSTERING.importance_percentile,
        eps_percentile: float = PAPER_CLUSTERING.eps_percentile,
        eps_floor: float = PAPER_CLUSTERING.eps_floor,
        min_samples_fraction: float = PAPER_CLUSTERING.min_samples_fraction,
        min_samples_floor: int = PAPER_CLUSTERING.min_samples_floor,
        sigma: float | None = None,
        range_sigma: float = REFERENCE_RANGE_SIGMA,
        truncate: float = 4.0,
        cluster_backend: str = PAPER_CLUSTERING.cluster_backend,
        smooth: int = 0,
        smooth_sigma: float = 0.3,
        gradient_noise: float = 0.0,
        generator: torch.Generator | int | None = None,
        backend: str | None = None,
        reshape_transform: ReshapeTransform | None = None,
        output_fn: OutputFn | None = None,
        allow_train_mode: bool = False,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> None:
        #: the clustering settings (steps 1–2), checked
        self.clustering = ClusterOptions(importance_percentile, eps_percentile, eps_floor, min_samples_fraction,
                                         min_samples_floor, cluster_backend)
        # the filter's settings (steps 3–4), checked as the op checks them
        self.sigma, self.range_sigma, self.truncate = filter_options(variant, sigma, range_sigma, truncate)
        self.variant = variant
        super().__init__(model, target_layer, smooth=smooth, smooth_sigma=smooth_sigma, gradient_noise=gradient_noise,
                         generator=generator, backend=backend, reshape_transform=reshape_transform,
                         output_fn=output_fn, allow_train_mode=allow_train_mode, aug_smooth=aug_smooth,
                         eigen_smooth=eigen_smooth)

    def __repr__(self) -> str:
        return (
            f"CFCAM(target_layer={self.layer_name!r}, variant={self.variant!r}, sigma={self.sigma}, "
            f"cluster_backend={self.clustering.cluster_backend!r}, backend={self.backend!r})"
        )

    @property
    def cluster_options(self) -> dict[str, Any]:
        """Keyword arguments of `channel_labels` for this explainer (the fields of `clustering`)."""
        return dataclasses.asdict(self.clustering)

    @property
    def filter_options(self) -> dict[str, Any]:
        """Keyword arguments of `cluster_filter_weights` (the same for its torch and Triton versions)."""
        return dict(variant=self.variant, sigma=self.sigma, range_sigma=self.range_sigma, truncate=self.truncate)

    def _get_weights(self, ctx: CallContext) -> Tensor:
        labels = channel_labels(ctx.activations, self.clustering)
        return op("cluster_filter_weights", ctx.backend)(ctx.gradients, labels, **self.filter_options)

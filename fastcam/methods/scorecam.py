"""Score-CAM (Wang et al., CVPR-W 2020), batched across images and channels."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastcam.methods._smoothing import ImageNoise
from fastcam.methods._progress import check_progress, chunk_starts
from fastcam.methods.base import BaseCAM, CallContext, OutputFn, ReshapeTransform, TargetLayers
from fastcam.ops import accumulation, check_choice, check_int
from fastcam.targets import Target, repeat_output

SCORES = ("probability", "logit")
_MODES = {4: "bilinear", 5: "trilinear"}


def normalize_channels(activations: Tensor) -> Tensor:
    """Per-channel min-max normalisation to [0, 1] over the spatial dims (a constant channel gives 0)."""
    a = accumulation(activations)
    flat = a.flatten(2)
    low = flat.amin(dim=2).view(*a.shape[:2], *([1] * (a.dim() - 2)))
    span = flat.amax(dim=2).view_as(low) - low
    return (a - low) / span.clamp_min(torch.finfo(a.dtype).tiny)


class ScoreCAM(BaseCAM):
    r"""Score-CAM: a channel's weight is how much the target score keeps when the input is masked by it.

    From [Wang et al., Score-CAM, CVPR-W 2020](https://arxiv.org/abs/1910.01279).

    For image x, channel c: $M_c = U(\mathrm{norm}(A_c))$ (min-max normalised at the layer's resolution,
    bilinearly upsampled with align_corners=False, as torchcam), $s_c = f^t(x \odot M_c)$,
    $w = \mathrm{softmax}_c(s - f^t(x))$, $L = \mathrm{ReLU}(\sum_c w_c A_c)$.

    Args:
        batch_size: masked inputs per forward. The masked inputs of *all* images and channels of the
            batch are packed together into chunks of this size (B·C forwards' worth in ceil(B·C/batch_size)
            calls), not looped per image. Constant channels (all-zero masks) share one forward of the
            zero image, which is exact and skips dead channels.
        score: "probability" (the target's probability, Score-CAM's definition, default: softmax for
            class scores, sigmoid for a single-logit model, see `fastcam.targets`) or "logit" (the raw
            target score, torchcam's choice). The baseline $f^t(x)$ is a per-image
            constant, which the softmax over channels cancels; it is kept for fidelity of the definition.
        progress: a tqdm progress bar over the masked forwards of each call (for long in-memory calls:
            many images, channels or samples); off by default.

    The other arguments (model, target_layer, backend, reshape_transform, output_fn, allow_train_mode,
    aug_smooth, eigen_smooth) are `BaseCAM`'s.

    Example:
        >>> with fastcam.ScoreCAM(model, "layer4", batch_size=64, progress=True) as cam:
        ...     maps = cam(images)            # (B, H, W) in [0, 1]
    """

    name = "scorecam"
    weights_run_model = True

    def __init__(
        self,
        model: nn.Module,
        target_layer: TargetLayers,
        *,
        batch_size: int = 32,
        score: str = "probability",
        progress: bool = False,
        backend: str | None = None,
        reshape_transform: ReshapeTransform | None = None,
        output_fn: OutputFn | None = None,
        allow_train_mode: bool = False,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> None:
        super().__init__(model, target_layer, backend=backend, reshape_transform=reshape_transform,
                         output_fn=output_fn, allow_train_mode=allow_train_mode, aug_smooth=aug_smooth,
                         eigen_smooth=eigen_smooth)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.score = check_choice("score", score, SCORES)
        self.progress = check_progress(progress)

    def _target_score(self, target: Target, output: Any) -> Tensor:
        """The target's probability (its score where none is defined), or its raw score ("logit")."""
        scores = target.probability(output) if self.score == "probability" else target.score(output)
        return accumulation(scores)

    #: a source of randomness for `_masked_inputs` (SS-CAM's noise); Score-CAM draws none
    generator: torch.Generator | int | None = None
    #: whether constant channels (all-zero masks) may share one forward of the zero image: true when the
    #: masked input of a zero mask is the zero image whatever the image and the sample
    zero_masks_give_zero_images: bool = True
    #: pytorch-grad-cam's masks (`fastcam.compat.pytorch_grad_cam` sets it): each channel upsampled with
    #: align_corners=True, then min-max normalised; by default normalised at the layer's resolution, then
    #: upsampled with align_corners=False (torchcam's order)
    upsample_then_normalize: bool = False

    @property
    def samples(self) -> int:
        """Masked inputs per channel and image (1; SS-CAM and IS-CAM average over several)."""
        return 1

    def _masked_inputs(self, images: Tensor, masks: Tensor, sample: Tensor, owners: Sequence[int] | None,
                       noise: ImageNoise) -> Tensor:
        r"""The masked inputs of one chunk: images (n, C, *size) of the rows, their upsampled masks
        (n, 1, *size), the sample index of each row (n,), the image of the call each row belongs to (on the
        host; given when `zero_masks_give_zero_images` is False, None otherwise), the call's noise source.
        Score-CAM: $x \odot M$."""
        return images * masks.to(images.dtype)

    @torch.no_grad()
    def _get_weights(self, ctx: CallContext) -> Tensor:
        images, activations, target = ctx.images, ctx.activations, ctx.target
        batch, channels = activations.shape[:2]
        pairs, samples = batch * channels, self.samples
        masks = normalize_channels(activations).flatten(0, 1).unsqueeze(1)  # (B*C, 1, *spatial)
        owner = torch.arange(batch, device=images.device).repeat_interleave(channels)  # image of each mask
        # A constant channel normalises to an all-zero mask, so its masked input is the zero image whatever
        # the image: one forward of f(0) scores all of them (dead post-ReLU channels are common), exactly.
        if self.zero_masks_give_zero_images:
            flat = activations.flatten(2)
            constant = (flat.amax(dim=2) - flat.amin(dim=2)).flatten() == 0
            live = torch.nonzero(~constant).squeeze(1)  # one host sync: the loop needs the count
        else:  # every pair runs: row r's pair is r mod pairs, known on the host
            constant = torch.zeros(pairs, dtype=torch.bool, device=images.device)
            live = torch.arange(pairs, device=images.device)
        totals = torch.zeros(pairs, dtype=masks.dtype, device=images.device)  # summed over the samples
        if live.numel() < pairs:
            zero_image = torch.zeros_like(images[:1])
            with ctx.model_autocast():
                zero_output = ctx.model(zero_image)
            zero_scores = self._target_score(target, repeat_output(ctx.view(zero_output), batch))
            totals = torch.where(constant, samples * zero_scores.to(totals.dtype).index_select(0, owner), totals)
        noise = ImageNoise(self.generator, batch, images.device)
        size = tuple(images.shape[2:])
        # Rows (sample, live pair), sample-major, packed into forwards of `batch_size` across every image,
        # channel and sample of the batch.
        rows = samples * live.numel()
        for start in chunk_starts(rows, self.batch_size, show=self.progress, desc=type(self).__name__):
            row = torch.arange(start, min(start + self.batch_size, rows), device=images.device)
            pair = live.index_select(0, row % live.numel())
            idx = owner.index_select(0, pair)
            if self.upsample_then_normalize:
                raw = activations.flatten(0, 1).index_select(0, pair).unsqueeze(1)
                up = normalize_channels(F.interpolate(raw, size=size, mode=_MODES[images.dim()], align_corners=True))
            else:
                up = F.interpolate(masks.index_select(0, pair), size=size, mode=_MODES[images.dim()], align_corners=False)
            owners = None if self.zero_masks_give_zero_images else [
                (r % pairs) // channels for r in range(start, start + row.numel())]
            masked = self._masked_inputs(images.index_select(0, idx), up, row // live.numel(), owners, noise)
            with ctx.model_autocast():  # masked forwards keep the caller's AMP
                out = ctx.model(masked)
            totals.index_add_(0, pair, self._target_score(target.select(idx), ctx.view(out)).to(totals.dtype))
        baseline = self._target_score(target, ctx.output)
        return torch.softmax((totals / samples).view(batch, channels) - baseline.unsqueeze(1), dim=1)

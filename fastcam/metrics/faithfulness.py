"""Faithfulness metrics: deletion / insertion AUC (RISE) and Average Drop / Increase in Confidence.

All of them run the model on perturbed copies of the batch; the perturbed inputs of every image and
every step are packed together into forwards of `batch_size` inputs (no per-image loop), on the
images' device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastcam._validation import TargetsLike, check_images
from fastcam.metrics._checks import check_maps, resize_maps
from fastcam.targets import Target, check_scores, resolve_target

BaselineLike = Union[str, float, Tensor]
#: class indices (None = predicted, an int, B indices) or a `fastcam.targets.Target` / callable
TargetLike = Union[TargetsLike, Target, Callable[[Any], Tensor]]
OutputFn = Callable[[Any], Tensor]
BASELINES = ("zeros", "blur", "mean")

#: RISE's blur for the insertion baseline: an 11 x 11 Gaussian kernel with sigma 5
BLUR_SIZE, BLUR_SIGMA = 11, 5.0


@dataclass
class CurveResult:
    """Per-image perturbation curves.

    Attributes:
        auc: (B,) area under each curve, trapezoid rule over the fraction of pixels in [0, 1].
        curve: (B, steps + 1) probability of the target class (softmax; sigmoid for a single logit) after step k (k / steps of the
            pixels removed, for deletion, or inserted, for insertion); column 0 is the unperturbed
            start (the clean image for deletion, the baseline for insertion).
        fractions: (steps + 1,) the fraction of pixels changed at each step, k / steps.
        targets: (B,) the class whose probability is tracked.
    """

    auc: Tensor
    curve: Tensor
    fractions: Tensor
    targets: Tensor


@dataclass
class DropIncrease:
    """Per-image Average Drop / Increase in Confidence terms (average them over a dataset).

    Attributes:
        drop: (B,) 100 * max(0, Y - O) / Y, in percent.
        increase: (B,) 1.0 where O > Y, else 0.0 (times 100 and averaged: Increase in Confidence, %).
        clean: (B,) Y, the target's probability on the image (softmax; sigmoid for a single logit).
        explained: (B,) O, the same probability on the image multiplied by its map.
        targets: (B,) the class explained.
    """

    drop: Tensor
    increase: Tensor
    clean: Tensor
    explained: Tensor
    targets: Tensor


def gaussian_blur(images: Tensor, size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> Tensor:
    """Depthwise Gaussian blur (size x size, `sigma`), replicate padding so borders do not darken."""
    x = torch.arange(size, dtype=torch.float64, device=images.device) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = (g / g.sum()).to(images.dtype)
    channels = images.shape[1]
    pad = size // 2
    out = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    out = F.conv2d(out, g.view(1, 1, 1, size).expand(channels, 1, 1, size), groups=channels)
    return F.conv2d(out, g.view(1, 1, size, 1).expand(channels, 1, size, 1), groups=channels)


def make_baseline(images: Tensor, baseline: BaselineLike) -> Tensor:
    """The value a removed pixel takes (deletion) / the canvas pixels are inserted into (insertion).

    - "zeros": 0 in the model's input space (for mean/std-normalised inputs that is the dataset mean
      colour, not black). Deletion's default, as in RISE and CF-CAM's evaluation code.
    - "blur": the image blurred by an 11 x 11 Gaussian of sigma 5 (RISE's insertion canvas). Insertion's default.
    - "mean": each image's per-channel mean.
    - a float: that constant; a tensor broadcastable to (B, C, H, W): used as given.
    """
    if isinstance(baseline, Tensor):
        try:
            return torch.broadcast_to(baseline.to(device=images.device, dtype=images.dtype), images.shape)
        except RuntimeError:
            raise ValueError(f"baseline of shape {tuple(baseline.shape)} does not broadcast to images "
                             f"{tuple(images.shape)}") from None
    if isinstance(baseline, bool):
        raise TypeError("baseline must be 'zeros', 'blur', 'mean', a float or a tensor, got bool")
    if isinstance(baseline, (int, float)):
        return torch.full_like(images, float(baseline))
    if baseline == "zeros":
        return torch.zeros_like(images)
    if baseline == "blur":
        return gaussian_blur(images)
    if baseline == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    raise ValueError(f"baseline must be one of {BASELINES}, a float or a tensor, got {baseline!r}")


def _target_probability(model: nn.Module, inputs: Tensor, target: Target, output_fn: OutputFn | None) -> Tensor:
    with torch.inference_mode():
        output = model(inputs)
        view = output_fn(output) if output_fn is not None else output
        # the target's own probability: softmax over classes, sigmoid for a single logit (never a flat 1);
        # a target without one (similarity, a plain function) gives its score
        probability = check_scores(target.probability(view), inputs.shape[0])
    return probability.float()


def _resolve(model: nn.Module, images: Tensor, maps: Tensor, targets: TargetLike,
             output_fn: OutputFn | None) -> tuple[Tensor, Tensor, Target, Tensor]:
    """Validated images, maps at the images' size, the target (None: the predicted class) and the (B,)
    classes it explains (-1 where it is not one class per image)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if output_fn is not None and not callable(output_fn):
        raise TypeError(f"output_fn must be callable or None, got {type(output_fn).__name__}")
    images = check_images(images, model)
    if images.dim() != 4:
        raise ValueError(f"faithfulness metrics take (B, C, H, W) images, got shape {tuple(images.shape)}")
    maps = check_maps(maps, images.shape[0]).to(images.device)
    maps = resize_maps(maps.float(), tuple(images.shape[-2:]))
    with torch.inference_mode():
        output = model(images)
        view = output_fn(output) if output_fn is not None else output
        target, _ = resolve_target(targets, view, images.shape[0])
    classes = target.classes if target.classes is not None else torch.full((images.shape[0],), -1, dtype=torch.long)
    return images, maps, target, classes.to(images.device).clone()


def pixel_ranks(maps: Tensor) -> Tensor:
    """(B, H, W) -> (B, H*W) int64 rank of each pixel in decreasing map order (0 = most salient).

    Ties are broken by pixel index (row-major), via a stable sort, so the order is deterministic.
    """
    flat = maps.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def _perturbation_curve(model: nn.Module, images: Tensor, maps: Tensor, targets: TargetLike, *, steps: int,
                        baseline: BaselineLike, batch_size: int, insert: bool,
                        output_fn: OutputFn | None) -> CurveResult:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    images, maps, target, classes = _resolve(model, images, maps, targets, output_fn)
    canvas = make_baseline(images, baseline)
    batch, channels, height, width = images.shape
    pixels = height * width
    ranks = pixel_ranks(maps)                                             # (B, HW)
    device = images.device
    # pixels changed after step k: floor(k * HW / steps), so step `steps` changes all of them
    counts = torch.arange(steps + 1, device=device) * pixels // steps     # (steps + 1,)
    jobs = batch * (steps + 1)
    probs = torch.empty(jobs, dtype=torch.float32, device=device)
    # deletion starts from the image and fills the top pixels with the baseline;
    # insertion starts from the baseline and fills the top pixels with the image
    top_source, rest_source = (images, canvas) if insert else (canvas, images)
    for start in range(0, jobs, batch_size):
        job = torch.arange(start, min(start + batch_size, jobs), device=device)
        img, step = job // (steps + 1), job % (steps + 1)
        changed = ranks.index_select(0, img) < counts.index_select(0, step).unsqueeze(1)   # (n, HW)
        changed = changed.view(-1, 1, height, width)
        inputs = torch.where(changed, top_source.index_select(0, img), rest_source.index_select(0, img))
        probs[start:start + job.numel()] = _target_probability(model, inputs, target.select(img), output_fn)
    curve = probs.view(batch, steps + 1)
    fractions = torch.arange(steps + 1, device=device, dtype=torch.float64) / steps
    auc = torch.trapezoid(curve.double(), dx=1.0 / steps, dim=1).float()
    return CurveResult(auc=auc, curve=curve, fractions=fractions.float(), targets=classes)


def deletion(model: nn.Module, images: Tensor, maps: Tensor, targets: TargetLike = None, *, steps: int = 100,
             baseline: BaselineLike = "zeros", batch_size: int = 64,
             output_fn: OutputFn | None = None) -> CurveResult:
    r"""Deletion curve and AUC (Petsiuk, Das & Saenko, "RISE", BMVC 2018). Lower is better.

    Pixels are ranked by decreasing map value (ties by pixel index); at step $k = 0 \dots n$ the top
    $\lfloor k\,HW/n \rfloor$ pixels (all channels) are replaced by the `baseline` (default "zeros": 0 in
    the model's input space; see `make_baseline`) and $p_k$ is the softmax probability of the target
    class. $\mathrm{AUC} = \frac1n\sum_{k=0}^{n-1}\frac{p_k + p_{k+1}}{2}$ (trapezoid over the removed
    fraction). A map smaller than the image is bilinearly upsampled first (only its order matters).
    targets: None (the model's predicted class on the clean image), an int, or B indices; or a
    `fastcam.targets.Target` (binary, multi-label, segmentation, ...; its probability, or its score where
    it has none, is tracked), as for the explainers. output_fn: picks the scores from the model's output
    (as the explainers' `output_fn`); tensors, tuples and Hugging Face outputs need none.
    The B * (n + 1) perturbed inputs run as forwards of `batch_size`.
    """
    return _perturbation_curve(model, images, maps, targets, steps=steps, baseline=baseline,
                               batch_size=batch_size, insert=False, output_fn=output_fn)


def insertion(model: nn.Module, images: Tensor, maps: Tensor, targets: TargetLike = None, *, steps: int = 100,
              baseline: BaselineLike = "blur", batch_size: int = 64,
              output_fn: OutputFn | None = None) -> CurveResult:
    r"""Insertion curve and AUC (Petsiuk, Das & Saenko, "RISE", BMVC 2018). Higher is better.

    Starts from the `baseline` canvas (default "blur": the image blurred by RISE's 11 x 11, sigma 5
    Gaussian; see `make_baseline`) and at step $k$ puts back the top $\lfloor k\,HW/n \rfloor$ pixels of
    the image in decreasing map order; $p_k$ is the target's softmax probability and the AUC the trapezoid
    rule over the inserted fraction, as for `deletion`.
    """
    return _perturbation_curve(model, images, maps, targets, steps=steps, baseline=baseline,
                               batch_size=batch_size, insert=True, output_fn=output_fn)


def average_drop_increase(model: nn.Module, images: Tensor, maps: Tensor, targets: TargetLike = None, *,
                          output_fn: OutputFn | None = None) -> DropIncrease:
    r"""Average Drop and Increase in Confidence (Chattopadhay et al., "Grad-CAM++", WACV 2018).

    The explanation image is $E = x \odot L$ (each pixel of every channel times the map in [0, 1], the map
    bilinearly upsampled to the image if needed; for normalised inputs, the map fades towards 0 = the
    dataset mean). With $Y$ the target's softmax probability on $x$ and $O$ on $E$:

    $$ \text{Average Drop} = \frac{100}{N}\sum_i \frac{\max(0, Y_i - O_i)}{Y_i}, \qquad
       \text{Increase in Confidence} = \frac{100}{N}\sum_i \mathbb{1}[O_i > Y_i] $$

    Returns the per-image terms (`drop` in percent, `increase` as 0/1); `.mean()` gives the metrics.
    Maps must lie in [0, 1] (fastcam's maps do). targets and output_fn as for `deletion`.
    """
    images, maps, target, classes = _resolve(model, images, maps, targets, output_fn)
    low, high = torch.aminmax(maps)
    if float(low) < 0 or float(high) > 1:
        raise ValueError(f"maps must lie in [0, 1] for Average Drop, got values in [{float(low)}, {float(high)}]")
    # two forwards of the same shape (not one of 2B): identical inputs then give identical scores, so
    # float noise between batch positions cannot count as an "increase"
    clean = _target_probability(model, images, target, output_fn)
    explained = _target_probability(model, images * maps.unsqueeze(1).to(images.dtype), target, output_fn)
    drop = 100.0 * torch.relu(clean - explained) / clean.clamp_min(torch.finfo(clean.dtype).tiny)
    return DropIncrease(drop=drop, increase=(explained > clean).float(), clean=clean, explained=explained,
                        targets=classes)

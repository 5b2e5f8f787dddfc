r"""Smoothing over the shared path: SmoothGrad's noisy copies and pytorch-grad-cam's `aug_smooth`, as extra
rows of the one forward of a call; plus the row bookkeeping they share.

Row layout of a call (`BaseCAM._explain`): the B images, or with `aug_smooth` their K = 6 augmented copies
(copy-major: rows k·B … k·B + B - 1 are copy k, copy 0 the images as given); then, for SmoothGrad, N noisy
copies of all of those. Image b owns the rows congruent to b modulo B (`owner`), so a target resolved on
the first B rows is extended to every row with `Target.select`.

`aug_smooth` (pytorch-grad-cam's `ttach` transforms, `tta.Compose([tta.HorizontalFlip(),
tta.Multiply(factors=[0.9, 1, 1.1])])`): the product of {no flip, horizontal flip} × {×0.9, ×1, ×1.1}, six
copies; each copy's map is de-augmented (flipped back; the intensity factor needs no inverse) and the six
are averaged. Differences from pytorch-grad-cam, on purpose: the six copies run as one batch (it runs six
calls), a target given as None is the prediction on the unaugmented image for every copy (it re-predicts
per copy), and the average is max-normalised (it leaves the mean of min-max maps unscaled).
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from fastcam.ops import max_normalize

#: pytorch-grad-cam's aug_smooth copies as (horizontal flip, intensity factor), the identity first
AUGMENTATIONS: tuple[tuple[bool, float], ...] = (
    (False, 1.0), (False, 0.9), (False, 1.1), (True, 0.9), (True, 1.0), (True, 1.1),
)


def check_generator(generator: object) -> torch.Generator | int | None:
    """A `torch.Generator`, an int seed or None; a TypeError otherwise."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, bool) or not isinstance(generator, numbers.Integral):
        raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
    return int(generator)


def make_generator(generator: torch.Generator | int | None, device: torch.device) -> torch.Generator | None:
    """The generator of one draw: a seed becomes a fresh generator on `device` (the same noise every call)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return torch.Generator(device=device).manual_seed(int(generator))


def owner(rows: int, batch: int, device: torch.device) -> Tensor:
    """(rows,) int64: the image each row belongs to (row r -> r mod batch)."""
    return torch.arange(batch, device=device).repeat(rows // batch)


def per_image(tensor: Tensor, batch: int) -> Tensor:
    """A (k·B, ...) tensor of row values as (B, k, ...), so per-image checks see every copy of an image."""
    return tensor if tensor.shape[0] == batch else tensor.unflatten(0, (-1, batch)).transpose(0, 1)


def head_rows(output: Any, rows: int) -> Any:
    """The first `rows` rows of a model output (tensors, tuples/lists and mappings of them; other values as
    they are)."""
    if isinstance(output, Tensor):
        return output[:rows] if output.dim() > 0 else output
    if isinstance(output, (tuple, list)):
        return type(output)(head_rows(item, rows) for item in output)
    if isinstance(output, Mapping):
        items = {k: head_rows(v, rows) for k, v in output.items()}
        try:
            return type(output)(**items)
        except TypeError:
            return dict(items)
    return output


def augment(images: Tensor) -> Tensor:
    """(B, C, *spatial) -> (6·B, C, *spatial): the `AUGMENTATIONS` copies, copy-major (flips along the last
    axis, the width)."""
    return torch.cat([(images.flip(-1) if flip else images) * factor for flip, factor in AUGMENTATIONS])


def deaugment(maps: Tensor, batch: int) -> Tensor:
    r"""(6·B, *spatial) per-copy maps -> (B, *spatial): each max-normalised (as pytorch-grad-cam's per-call
    maps are scaled), flipped back, averaged, max-normalised again:
    $M = \mathrm{norm}\big(\frac16 \sum_k T_k^{-1}(\mathrm{norm}(M_k))\big)$ (bilinear upsampling commutes
    with the flip, so this holds at the layer's resolution as at the input's)."""
    copies = max_normalize(maps).unflatten(0, (len(AUGMENTATIONS), batch))
    back = [m.flip(-1) if flip else m for m, (flip, _) in zip(copies.unbind(0), AUGMENTATIONS)]
    return max_normalize(torch.stack(back).mean(dim=0))


def with_noise_copies(rows: Tensor, copies: int, sigma: float, generator: torch.Generator | None) -> Tensor:
    r"""(R, ...) -> ((N+1)·R, ...): the rows, then N copies $x + \sigma\varepsilon$, $\varepsilon \sim \mathcal N(0, 1)$,
    drawn copy by copy in one call (so, with torch's CPU generator, the same stream as N draws of the rows'
    shape: torchcam's Smooth Grad-CAM++ with the same seed, when R·C·H·W is a multiple of 16)."""
    noise = torch.randn((copies, *rows.shape), generator=generator, device=rows.device, dtype=rows.dtype)
    return torch.cat([rows, (rows.unsqueeze(0) + sigma * noise).flatten(0, 1)])


def mean_over_copies(gradients: Tensor, explained: int) -> tuple[Tensor, Tensor]:
    """((N+1)·R, ...) gradients -> (their mean over the N noisy copies (R, ...), the copies (N, R, ...))."""
    samples = gradients[explained:].unflatten(0, (-1, explained))
    return samples.mean(dim=0), samples

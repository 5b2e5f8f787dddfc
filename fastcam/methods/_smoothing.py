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

import itertools
import numbers
from collections.abc import Mapping, Sequence
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


class ImageNoise:
    """Standard normal noise for the rows of one call (SmoothGrad's noisy copies, SS-CAM's noisy masks).

    With an int seed, image i of the call draws from its own generator, seeded with seed + i, and its rows
    draw in the same order whatever the rest of the batch: a batch's maps equal its images' maps explained
    alone (image i alone with seed + i), and the same seed gives the same noise on every call. A
    `torch.Generator` (its state advances) or None (torch's global RNG) is one stream for the whole call,
    drawn in row order (torchcam's order: its noise for `torch.manual_seed(seed)` is a generator seeded so).
    """

    def __init__(self, generator: torch.Generator | int | None, batch: int, device: torch.device) -> None:
        self.device = device
        self._stream = generator if not isinstance(generator, int) else None
        self._images = None if not isinstance(generator, int) else [
            torch.Generator(device=device).manual_seed((generator + i) % 2**64) for i in range(batch)
        ]

    @property
    def per_image(self) -> bool:
        """Whether every image has its own generator (an int seed)."""
        return self._images is not None

    def randn(self, owners: Sequence[int], shape: Sequence[int], dtype: torch.dtype) -> Tensor:
        """(len(owners), *shape) standard normal values: row r belongs to image owners[r] of the call
        (consecutive rows of one image are drawn together, from that image's generator when seeded)."""
        if self._images is None:
            return torch.randn((len(owners), *shape), generator=self._stream, device=self.device, dtype=dtype)
        runs = [(image, len(list(rows))) for image, rows in itertools.groupby(owners)]
        return torch.cat([torch.randn((n, *shape), generator=self._images[image], device=self.device, dtype=dtype)
                          for image, n in runs])


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


def with_noise_copies(rows: Tensor, copies: int, sigma: float, noise: ImageNoise, batch: int) -> Tensor:
    r"""(R, ...) -> ((N+1)·R, ...): the rows, then N copies $x + \sigma\varepsilon$, $\varepsilon \sim \mathcal N(0, 1)$.
    Row r belongs to image r mod `batch`. Seeded per image (`ImageNoise`), each row draws its N copies
    (N, ...) in one call, rows in order; as one stream, all copies are drawn copy by copy in one call (so,
    with torch's CPU generator, the same stream as N draws of the rows' shape: torchcam's Smooth
    Grad-CAM++ with the same seed, when R·C·H·W is a multiple of 16)."""
    owners = [r % batch for r in range(rows.shape[0])]
    if noise.per_image:
        eps = noise.randn(owners, (copies, *rows.shape[1:]), rows.dtype).transpose(0, 1)
    else:
        eps = noise.randn(range(copies), rows.shape, rows.dtype)
    return torch.cat([rows, (rows.unsqueeze(0) + sigma * eps).flatten(0, 1)])


def mean_over_copies(gradients: Tensor, explained: int) -> tuple[Tensor, Tensor]:
    """((N+1)·R, ...) gradients -> (their mean over the N noisy copies (R, ...), the copies (N, R, ...))."""
    samples = gradients[explained:].unflatten(0, (-1, explained))
    return samples.mean(dim=0), samples

"""Input checks shared by every method: bad input gets a clear error, never a NaN map."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor, nn

TargetsLike = Union[None, int, Sequence[int], Tensor]


class NonFiniteError(ValueError):
    """A batch produced NaN/Inf somewhere on the way to its maps (pixels, logits, activations, gradients).

    Attributes:
        indices: positions in the batch of the offending images (sorted).
        reason: what was non-finite, e.g. "the model's logits".
    The pipeline catches it, skips exactly these images with the reason, and explains the rest.
    """

    def __init__(self, reason: str, indices: Sequence[int]) -> None:
        self.reason = reason
        self.indices = sorted(int(i) for i in indices)
        shown = ", ".join(map(str, self.indices[:10])) + (", ..." if len(self.indices) > 10 else "")
        super().__init__(f"{reason} contain NaN or Inf for image(s) {shown} of the batch")


def check_images(images: object, model: nn.Module | None = None) -> Tensor:
    """Validate a batch of images (B, C, H, W): tensor, 4-D, non-empty, floating, finite.

    The finiteness check costs one device-to-host sync per batch; it is the price of never
    returning a NaN map for NaN pixels.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must be 4-D (B, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0)")
    if images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"images has an empty spatial size {tuple(images.shape[2:])}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got dtype {images.dtype}")
    if model is not None:
        expected = expected_in_channels(model)
        if expected is not None and images.shape[1] != expected:
            raise ValueError(
                f"images have {images.shape[1]} channels but the model's first convolution expects {expected}"
            )
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or Inf pixels")
    return images


def expected_in_channels(model: nn.Module) -> int | None:
    """Input channels of the model's first convolution, or None if it has none."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return None


def check_logits(output: object, batch_size: int) -> Tensor:
    """The model must return (B, K) class scores."""
    if not isinstance(output, Tensor):
        raise TypeError(
            f"the model must return a (B, K) tensor of class scores, got {type(output).__name__}"
        )
    if output.dim() != 2 or output.shape[0] != batch_size:
        raise ValueError(
            f"the model must return (B, K) class scores with B = {batch_size}, got shape {tuple(output.shape)}"
        )
    if output.shape[1] == 0:
        raise ValueError("the model returned zero classes (K = 0)")
    return output


def resolve_targets(targets: TargetsLike, logits: Tensor) -> Tensor:
    """Turn `targets` into a (B,) int64 tensor on the logits' device.

    None means the predicted class (argmax, stays on the device); an int applies to every image;
    a sequence or 1-D tensor gives one class per image.
    """
    batch, num_classes = logits.shape
    device = logits.device
    if targets is None:
        return logits.detach().argmax(dim=1)
    if isinstance(targets, bool):
        raise TypeError("targets must be None, an int, or a sequence/1-D tensor of class indices, got bool")
    if isinstance(targets, int):
        if not 0 <= targets < num_classes:
            raise ValueError(f"target class {targets} is out of range for a model with {num_classes} classes")
        return torch.full((batch,), targets, dtype=torch.long, device=device)
    if isinstance(targets, Tensor):
        if targets.dim() == 0:
            return resolve_targets(int(targets.item()), logits)
        if targets.dim() != 1:
            raise ValueError(f"targets must be a 1-D tensor of B = {batch} class indices, got shape {tuple(targets.shape)}")
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise TypeError(f"targets must hold integer class indices, got dtype {targets.dtype}")
        values = targets.to(device=device, dtype=torch.long)
    elif isinstance(targets, Sequence) and not isinstance(targets, (str, bytes)):
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in targets):
            raise TypeError("targets must be a sequence of int class indices")
        values = torch.tensor(list(targets), dtype=torch.long, device=device)
    else:
        raise TypeError(
            f"targets must be None, an int, or a sequence/1-D tensor of class indices, got {type(targets).__name__}"
        )
    if values.shape[0] != batch:
        raise ValueError(f"got {values.shape[0]} targets for a batch of {batch} images")
    # one host sync, only for user-given tensors/sequences (None, the hot path, never syncs)
    low, high = torch.stack([values.min(), values.max()]).tolist()
    if low < 0 or high >= num_classes:
        raise ValueError(f"targets must lie in [0, {num_classes - 1}], got values in [{low}, {high}]")
    return values


def resolve_layer(model: nn.Module, target_layer: nn.Module | str) -> tuple[str, nn.Module]:
    """Find the target layer by module or dotted name ("layer4", "features.29", "layer4.1.conv2")."""
    if isinstance(target_layer, str):
        modules = dict(model.named_modules())
        if target_layer not in modules:
            candidates = [n for n in modules if n and "." not in n]
            raise ValueError(
                f"target layer {target_layer!r} is not a module of the model; top-level modules: {candidates}"
            )
        return target_layer, modules[target_layer]
    if isinstance(target_layer, nn.Module):
        for name, module in model.named_modules():
            if module is target_layer:
                return name, module
        raise ValueError(f"target layer {type(target_layer).__name__} is not a submodule of the model")
    raise TypeError(f"target_layer must be an nn.Module or a dotted module name, got {type(target_layer).__name__}")

"""Input checks shared by every method: bad input gets a clear error naming the problem, never a NaN map.

Checks that need a value from the device (NaN/Inf anywhere on the way to the maps) are gathered per call
in a `FiniteCheck` and read back in one host sync; everything else is decided from shapes, dtypes and
flags, which costs nothing.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor, nn

from fastcam._deferred import defer, deferring
from fastcam.errors import NonFiniteError, UninformativeMapWarning  # noqa: F401 - defined with every error; importable here

TargetsLike = Union[None, int, Sequence[int], Tensor]
#: what a layer may hand to the methods: (B, C, h, w) maps or (B, C, d, h, w) volumes
SPATIAL_RANKS = (2, 3)


class FiniteCheck:
    """Per-image NaN/Inf checks gathered along one call, read back to the host once (`raise_if_any`).

    Each `add` queues, without syncing, one fused read of the tensor: its per-image min and max, which
    are NaN if any value is NaN and ±Inf if any is infinite (and cannot overflow, unlike a sum). The first
    reason with a flagged image, in the order added, names the error.
    """

    def __init__(self) -> None:
        self._reasons: list[str] = []
        self._extremes: list[Tensor] = []

    def add(self, reason: str, tensor: Tensor) -> None:
        """Queue the check of a (B, ...) tensor: image b is flagged if any of tensor[b] is NaN or Inf."""
        if tensor.is_floating_point() and tensor.numel():
            low, high = torch.aminmax(tensor.detach().reshape(tensor.shape[0], -1), dim=1)
            self._reasons.append(reason)
            self._extremes.append(torch.stack([low.float(), high.float()]))

    def raise_if_any(self, also: Tensor | None = None) -> list[bool]:
        """One host read: raise `NonFiniteError` for the first reason with flagged images.

        `also`: a 1-D bool tensor of further flags (True = fine) the caller needs on the host; they travel in
        the same transfer and are returned as a list (empty when None), so a call still syncs once. Under
        `fastcam._deferred.deferred_host_checks` (CUDA graph capture) nothing is read: the flags are kept
        for after the replay and every `also` flag is returned as True.
        """
        bad = None
        if self._extremes:
            bad = ~torch.isfinite(torch.stack([e.to(self._extremes[0].device) for e in self._extremes]))  # (checks, 2, B)
        if deferring():
            ok_parts = ([] if bad is None else [~bad.any().reshape(1)]) + ([] if also is None else [also.bool().reshape(-1)])
            if ok_parts:
                defer(torch.cat([p.to(ok_parts[0].device) for p in ok_parts]))
            return [True] * (0 if also is None else also.numel())
        if bad is None:
            return also.tolist() if also is not None else []
        if also is None:
            if not bool(bad.any()):
                return []
            rows = bad.any(dim=1).cpu().tolist()
            flags: list[bool] = []
        else:
            per_image = bad.any(dim=1)  # (checks, B)
            values = torch.cat([per_image.flatten(), also.to(per_image.device)]).tolist()  # the one host read
            batch = per_image.shape[1]
            rows = [values[i * batch : (i + 1) * batch] for i in range(per_image.shape[0])]
            flags = values[per_image.numel():]
        for reason, row in zip(self._reasons, rows):
            if any(row):
                raise NonFiniteError(reason, [i for i, flagged in enumerate(row) if flagged])
        return flags


def check_has_values(tensor: Tensor, name: str) -> Tensor:
    """`tensor`, or a ValueError naming `name` when it lives on the meta device (shapes only, no values to
    read or copy: torch's own error would be a raw NotImplementedError deep inside a call)."""
    if tensor.is_meta:
        raise ValueError(f"{name} are on the meta device, which holds shapes but no values: create them on the "
                         "CPU or on the images' device")
    return tensor


def check_image_batch(images: object) -> Tensor:
    """The structure of a batch of images, with no host sync: a floating tensor (B, C, H, W), or
    (B, C, D, H, W) for volumes, non-empty. Finiteness is checked later, with the rest (`FiniteCheck`)."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
    if images.dim() not in (4, 5):
        raise ValueError(f"images must be 4-D (B, C, H, W) or 5-D (B, C, D, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0)")
    if any(s == 0 for s in images.shape[2:]):
        raise ValueError(f"images has an empty spatial size {tuple(images.shape[2:])}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got dtype {images.dtype}")
    return images


def check_images(images: object, model: nn.Module | None = None) -> Tensor:
    """`check_image_batch` plus the finiteness of the pixels (one host sync), for callers outside the
    explainers (metrics). `model` is accepted for compatibility and not used: the channel check happens
    at the first convolution the model actually runs (`fastcam.methods._capture`)."""
    images = check_image_batch(images)
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or Inf pixels")
    return images


def expected_in_channels(model: nn.Module) -> int | None:
    """Input channels of the first registered convolution, or None: a default for preprocessing only (the
    explainers check the convolution that actually runs first)."""
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return module.in_channels
    return None


def expected_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The (H, W) a model says it takes, or None: a default for preprocessing only. Read from a Hugging
    Face config's `image_size` (ViT, Swin, ConvNeXt, ...), timm's `pretrained_cfg`/`default_cfg`
    "input_size" (C, H, W), or an `image_size` attribute (torchvision's ViT)."""

    def pair(value: object) -> tuple[int, int] | None:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return (value, value)
        if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
            return (int(value[0]), int(value[1]))
        return None

    found = pair(getattr(getattr(model, "config", None), "image_size", None))
    for attribute in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attribute, None)
        size = cfg.get("input_size") if isinstance(cfg, dict) else None
        if found is None and isinstance(size, (tuple, list)) and len(size) == 3:
            found = pair(tuple(size[1:]))
    return found or pair(getattr(model, "image_size", None))


#: modules whose output depends on the training flag (batch statistics, random dropping)
_MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.AlphaDropout,
                   nn.FeatureAlphaDropout)
#: the same for modules of other libraries, by class name (timm's DropPath, torchvision's StochasticDepth, ...)
_MODE_DEPENDENT_NAMES = ("Dropout", "DropPath", "StochasticDepth", "DropBlock", "BatchNorm")


def _depends_on_mode(module: nn.Module) -> bool:
    if isinstance(module, _MODE_DEPENDENT):
        return True
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return module.track_running_stats
    return any(part in type(module).__name__ for part in _MODE_DEPENDENT_NAMES)


def first_training_module(model: nn.Module) -> str | None:
    """The name of the first module in training mode whose output depends on it (BatchNorm, dropout,
    stochastic depth), or None. A model whose training flag changes nothing (no such module) passes."""
    for name, module in model.named_modules():
        if module.training and _depends_on_mode(module):
            return name or type(module).__name__
    return None


def check_model_input(model: nn.Module, images: Tensor, *, allow_train_mode: bool = False) -> None:
    """Model-side checks that need no sync: eval mode, and images on the model's device and in its dtype.

    A model in training mode would be explained with batch statistics (one image's map would depend on
    the rest of the batch) and its BatchNorm running statistics would be updated: refused unless the
    caller opts in. A dtype mismatch is allowed inside autocast, which casts for the model.
    """
    if not allow_train_mode:
        name = first_training_module(model)
        if name is not None:
            raise ValueError(
                f"the model is in training mode (module {name!r} behaves differently in training): explanations "
                "would use batch statistics or random dropping, and BatchNorm running statistics would be updated. "
                "Call model.eval() first, or pass allow_train_mode=True to explain it as it is"
            )
    reference = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
    if reference is None:
        return
    if reference.device != images.device:
        raise ValueError(f"images are on {images.device} but the model is on {reference.device}; move one of them")
    if images.dtype != reference.dtype and not torch.is_autocast_enabled(images.device.type):
        raise TypeError(
            f"images are {images.dtype} but the model is {reference.dtype}: convert the images with "
            f".to({reference.dtype}), or run inside torch.autocast for mixed precision"
        )


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

    None means the predicted class (argmax, stays on the device); an int (or a 0-d integer tensor)
    applies to every image; a sequence or 1-D integer tensor gives one class per image. Tensors made under
    `torch.inference_mode()` are accepted (copied into normal tensors, which autograd can save).
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
        check_has_values(targets, "targets")
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise TypeError(f"targets must hold integer class indices, got dtype {targets.dtype}")
        if targets.dim() == 0:
            return resolve_targets(int(targets.item()), logits)
        if targets.dim() != 1:
            raise ValueError(f"targets must be a 1-D tensor of B = {batch} class indices, got shape {tuple(targets.shape)}")
        values = targets.to(device=device, dtype=torch.long)
        if values.is_inference():
            values = values.clone()  # outside inference mode (the callers ensure it), a normal tensor
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
    """Find the target layer by module or dotted name ("layer4", "features.29", "layer4.1.conv2").

    A name may index a container from its end ("blocks.-1.norm1", "vit.layers.-1.layernorm_before"): it is
    returned under the model's own name ("blocks.11.norm1").
    """
    if isinstance(target_layer, str):
        modules = dict(model.named_modules())
        if target_layer not in modules and "-" in target_layer:
            target_layer = _from_end(model, target_layer)
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


def _from_end(model: nn.Module, name: str) -> str:
    """`name` with negative container indices ("blocks.-1") replaced by the children's own names; the name
    unchanged when a part does not resolve (the caller reports it)."""
    module, parts = model, []
    for part in name.split("."):
        children = list(module._modules)
        if part.startswith("-") and part[1:].isdigit() and 0 < int(part[1:]) <= len(children):
            part = children[int(part)]
        child = module._modules.get(part)
        if child is None:
            return name
        module = child
        parts.append(part)
    return ".".join(parts)


def resolve_layers(model: nn.Module, target_layer: object) -> tuple[tuple[str, nn.Module], ...]:
    """One layer (module or name), or a non-empty list/tuple of them (multi-layer fusion), without repeats."""
    items = list(target_layer) if isinstance(target_layer, (list, tuple)) else [target_layer]
    if not items:
        raise ValueError("target_layer is an empty list; give at least one layer")
    layers = tuple(resolve_layer(model, item) for item in items)
    names = [name for name, _ in layers]
    if len(set(map(id, (m for _, m in layers)))) != len(layers):
        raise ValueError(f"target_layer lists the same module twice: {names}")
    return layers

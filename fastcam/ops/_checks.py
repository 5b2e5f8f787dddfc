"""Argument checks: the one validation vocabulary of the package, and the fused operations' own checks.

`check_int`, `check_real` and `check_choice` take (name, value, bounds or choices) and raise a TypeError for
a value of the wrong type, a ValueError for a value out of range, both naming the argument; every floor
above (cluster, methods, softcam) uses them. They live on the lowest floor so that `fastcam.kernels` (which
imports only `fastcam.ops` and Triton) and the references raise the same errors for the same bad arguments.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Sequence
from typing import TypeVar

import torch
from torch import Tensor

#: dtypes every kernel reads (half inputs accumulate in float32, float64 in float64)
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
#: the SoftCAM poolings of the evidence maps
POOLS = ("avg", "max", "lse")

T = TypeVar("T")


def check_size(size: Sequence[int]) -> tuple[int, ...]:
    """An output size (H, W) or (D, H, W) as positive ints, or a ValueError/TypeError naming the problem.

    Symbolic sizes (`torch.SymInt`, met while `torch.export` traces a graph whose spatial size is dynamic)
    are ints too: exported graphs upsample to the input's own size.
    """
    if isinstance(size, Tensor) or not isinstance(size, Sequence) or len(size) not in (2, 3):
        raise TypeError(f"size must be a pair (H, W) or a triple (D, H, W) of ints, got {size!r}")
    if not all(isinstance(s, (int, torch.SymInt)) and not isinstance(s, bool) for s in size):
        raise TypeError(f"size must be a pair (H, W) or a triple (D, H, W) of ints, got {size!r}")
    if any(s < 1 for s in size):
        raise ValueError(f"size must be positive, got {size!r}")
    return tuple(size)


def check_activations(activations: object, name: str = "activations", *, dims: tuple[int, ...] = (4, 5)) -> None:
    """A float (B, C, h, w) (or (B, C, d, h, w)) tensor with C and every spatial size >= 1."""
    if not isinstance(activations, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(activations).__name__}")
    if activations.dim() not in dims:
        layouts = " or ".join({4: "(B, C, h, w)", 5: "(B, C, d, h, w)"}[d] for d in dims)
        raise ValueError(f"{name} must be {layouts}, got shape {tuple(activations.shape)}")
    if activations.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {activations.dtype}")
    if any(s < 1 for s in activations.shape[1:]):
        raise ValueError(f"{name} must have C and every spatial size >= 1, got shape {tuple(activations.shape)}")


def check_int(name: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    """An int (not a bool; numpy integers too) within [low, high] (None: unbounded), as a Python int; a
    TypeError naming `name` for another type, a ValueError for a value out of range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        bound = " and ".join(b for b in (f">= {low}" if low is not None else "",
                                         f"<= {high}" if high is not None else "") if b)
        raise ValueError(f"{name} must be an int {bound}, got {value}")
    return value


def check_real(name: str, value: object, *, low: float = -math.inf, low_inclusive: bool = True,
               high: float = math.inf) -> float:
    """A finite real number (not a bool) within [low or (low, high], as a float; a TypeError naming `name`
    for another type, a ValueError for NaN, an infinity or a value out of range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    above = value >= low if low_inclusive else value > low
    if not (math.isfinite(value) and above and value <= high):
        bounds = [f"{'>=' if low_inclusive else '>'} {low}" if low != -math.inf else "",
                  f"<= {high}" if high != math.inf else ""]
        bound = " and ".join(b for b in bounds if b)
        raise ValueError(f"{name} must be finite{' and ' + bound if bound else ''}, got {value!r}")
    return value


def check_choice(name: str, value: T, choices: Collection[object]) -> T:
    """`value` if it is one of `choices`; a ValueError naming `name` and listing them otherwise."""
    try:
        known = value in choices
    except TypeError:  # unhashable, for a set of choices
        known = False
    if not known:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_pool(pool: object, temperature: object) -> tuple[str, float]:
    """A SoftCAM pooling name and a positive finite temperature (checked for every pool)."""
    return str(check_choice("pool", pool, POOLS)), check_real("temperature", temperature, low=0, low_inclusive=False)


def check_head_inputs(features: object, weight: object, bias: object) -> tuple[Tensor, Tensor | None]:
    """Validate the evidence head's operands; returns the weight as (K, C) (a conv's (K, C, 1, 1) is accepted)."""
    if not isinstance(features, Tensor):
        raise TypeError(f"features must be a torch.Tensor (B, C, h, w), got {type(features).__name__}")
    if features.dim() != 4:
        raise ValueError(f"features must be 4-D (B, C, h, w), got shape {tuple(features.shape)}")
    if features.dtype not in FLOAT_DTYPES:
        raise TypeError(f"features must be float32, float16, bfloat16 or float64, got {features.dtype}")
    if any(s == 0 for s in features.shape):
        raise ValueError(f"features must be non-empty, got shape {tuple(features.shape)}")
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a torch.Tensor (K, C), got {type(weight).__name__}")
    if weight.dim() == 4 and weight.shape[2:] == (1, 1):
        weight = weight.reshape(weight.shape[0], weight.shape[1])  # differentiable view of a 1×1 conv weight
    if weight.dim() != 2 or weight.shape[1] != features.shape[1] or weight.shape[0] == 0:
        raise ValueError(
            f"weight must be (K, C) with C = {features.shape[1]} (the features' channels), got {tuple(weight.shape)}"
        )
    if weight.dtype not in FLOAT_DTYPES:
        raise TypeError(f"weight must be float32, float16, bfloat16 or float64, got {weight.dtype}")
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise TypeError(f"bias must be a torch.Tensor (K,) or None, got {type(bias).__name__}")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
        if bias.dtype not in FLOAT_DTYPES:
            raise TypeError(f"bias must be float32, float16, bfloat16 or float64, got {bias.dtype}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.device != features.device:
            raise ValueError(f"{name} is on {t.device} but features are on {features.device}")
    return weight, bias  # type: ignore[return-value]


def check_class_targets(targets: object, batch: int, num_classes: int, device: torch.device, *, check_range: bool) -> None:
    """(B,) integer class indices on `device`; their range costs one host sync and is checked only on request."""
    if not isinstance(targets, Tensor) or targets.dim() != 1 or targets.shape[0] != batch:
        raise ValueError(f"targets must be a 1-D tensor of B = {batch} class indices")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"targets must hold integer class indices, got dtype {targets.dtype}")
    if targets.device != device:
        raise ValueError(f"targets are on {targets.device} but the evidence is on {device}")
    if check_range:
        low, high = torch.stack([targets.min(), targets.max()]).tolist()
        if low < 0 or high >= num_classes:
            raise ValueError(f"targets must lie in [0, {num_classes - 1}], got values in [{low}, {high}]")


def check_channel_labels(labels: object, gradients: Tensor) -> Tensor:
    """CF-CAM's (B, C) int64/int32 channel labels for (B, C, ...) gradients, on their device (the values,
    -2, -1 or a cluster id, are not read: that would cost a host sync)."""
    batch, channels = gradients.shape[:2]
    if not isinstance(labels, Tensor) or labels.shape != (batch, channels):
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a (B, C) = ({batch}, {channels}) tensor, got {got}")
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels must be int64 or int32, got {labels.dtype}")
    if labels.device != gradients.device:
        raise ValueError(f"labels are on {labels.device} but the gradients are on {gradients.device}")
    return labels

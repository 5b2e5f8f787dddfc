"""Input handling shared by every clustering entry point.

Everything is normalised to torch tensors on the points' device (numpy arrays become CPU tensors,
zero-copy); `Problem` remembers how to give the answer back in the caller's type and shape.
Bad input gets a clear TypeError/ValueError naming the problem, never a silent wrong answer.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence, Union

import numpy as np
import torch
from torch import Tensor

ArrayLike = Union[Tensor, np.ndarray]
EpsLike = Union[float, Sequence[float], Tensor, np.ndarray]
MinSamplesLike = Union[int, Sequence[int], Tensor, np.ndarray]


@dataclass(frozen=True)
class Problem:
    """A validated batch of point clouds.

    points: (B, N, D) float64, invalid points zeroed (so they can never carry NaN/Inf anywhere).
    valid:  (B, N) bool, True where a point takes part.
    batched: False when the caller passed a single (N, D) problem (answers are then un-batched).
    as_numpy: True when the caller passed a numpy array (answers are then numpy arrays).
    """

    points: Tensor
    valid: Tensor
    batched: bool
    as_numpy: bool

    @property
    def device(self) -> torch.device:
        return self.points.device

    def give_back(self, result: Tensor) -> Any:
        """Un-batch and convert the (B, ...) result to the caller's container."""
        if not self.batched:
            result = result[0]
        if self.as_numpy:
            return result.cpu().numpy()
        return result


def _to_tensor(value: object, name: str) -> tuple[Tensor, bool]:
    if isinstance(value, Tensor):
        return value, False
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got a numpy array of dtype {value.dtype}")
        return torch.from_numpy(np.ascontiguousarray(value)), True
    if hasattr(value, "__cuda_array_interface__") or hasattr(value, "__dlpack__"):
        # CuPy arrays and friends: zero-copy onto a torch CUDA tensor
        return torch.from_dlpack(value), False
    raise TypeError(
        f"{name} must be a torch.Tensor or numpy.ndarray of shape (B, N, D) or (N, D), got {type(value).__name__}"
    )


def check_points(points: object, valid: object = None, *, name: str = "points") -> Problem:
    """Validate points (B, N, D) or (N, D) and the optional valid mask (B, N) or (N,).

    Integer and bool points are accepted and converted to float64, as scikit-learn does. NaN or Inf
    among the *valid* points is an error, but it is not checked here (that needs a host read): callers
    check `finite(problem)` with `require_finite`, or fold it into their one read of device flags.
    Invalid (padding) points may hold anything; they are zeroed.
    """
    tensor, as_numpy = _to_tensor(points, name)
    if tensor.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {tensor.dtype}")
    if tensor.dim() == 2:
        batched = False
        tensor = tensor.unsqueeze(0)
    elif tensor.dim() == 3:
        batched = True
    else:
        raise ValueError(f"{name} must have shape (B, N, D) or (N, D), got shape {tuple(tensor.shape)}")
    batch, count, dims = tensor.shape
    if dims == 0:
        raise ValueError(f"{name} has D = 0 features (shape {tuple(tensor.shape)}); DBSCAN needs D >= 1")
    tensor = tensor.to(torch.float64)

    if valid is None:
        mask = torch.ones(batch, count, dtype=torch.bool, device=tensor.device)
    else:
        mask, _ = _to_tensor(valid, "valid")
        if mask.dtype != torch.bool:
            raise TypeError(f"valid must be a boolean mask, got dtype {mask.dtype}")
        if not batched and mask.dim() == 1:
            mask = mask.unsqueeze(0)
        if tuple(mask.shape) != (batch, count):
            expected = (batch, count) if batched else (count,)
            raise ValueError(f"valid must have shape {expected} to match {name}, got {tuple(mask.shape)}")
        mask = mask.to(tensor.device)
        # padding may hold garbage (NaN, Inf): zero it so it can never reach an arithmetic result
        tensor = torch.where(mask.unsqueeze(-1), tensor, 0.0)
    return Problem(points=tensor.contiguous(), valid=mask.contiguous(), batched=batched, as_numpy=as_numpy)


def finite(problem: Problem) -> Tensor:
    """(B,) bool on the device: every valid point of the problem is finite (padding is zeroed)."""
    return torch.isfinite(problem.points).flatten(1).all(1)


def require_finite(problem: Problem, name: str = "points") -> None:
    """Raise ValueError for NaN/Inf among the valid points (one host read)."""
    if problem.points.numel() and not bool(finite(problem).all()):
        raise ValueError(f"{name} contain NaN or Inf values (among the valid points)")


def _per_problem(value: object, batch: int, name: str) -> tuple[np.ndarray, bool]:
    """A scalar or a (B,) sequence/array/tensor -> (B,) numpy array (host values, validated there)."""
    if isinstance(value, bool) or isinstance(value, np.bool_):
        raise TypeError(f"{name} must be a number or one number per problem, got bool")
    if isinstance(value, Tensor):
        array = value.detach().cpu().numpy()
    elif isinstance(value, (numbers.Number, np.ndarray, np.generic)):
        array = np.asarray(value)
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        array = np.asarray(list(value))
    else:
        raise TypeError(f"{name} must be a number or a (B,) sequence/array/tensor, got {type(value).__name__}")
    if array.dtype == object or array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.ndim == 0:
        return np.full(batch, array[()]), True
    if array.ndim != 1 or array.shape[0] != batch:
        raise ValueError(f"{name} must be a scalar or have shape ({batch},) (one per problem), got {array.shape}")
    return array, False


def check_eps(eps: object, batch: int) -> np.ndarray:
    """(B,) float64 radii, each finite and > 0 (scikit-learn's range, (0, inf))."""
    values, _ = _per_problem(eps, batch, "eps")
    values = values.astype(np.float64)
    if np.isnan(values).any():
        raise ValueError("eps must not be NaN")
    if np.isinf(values).any():
        raise ValueError("eps must be finite (scikit-learn's DBSCAN takes eps in (0, inf))")
    if (values <= 0).any():
        raise ValueError(f"eps must be > 0, got {values[values <= 0][0]!r}")
    return values


def check_min_samples(min_samples: object, batch: int) -> np.ndarray:
    """(B,) int64 core thresholds, each >= 1 (a point counts itself, as in scikit-learn)."""
    values, _ = _per_problem(min_samples, batch, "min_samples")
    if values.dtype.kind == "f":
        raise TypeError(f"min_samples must be an integer (or integers), got dtype {values.dtype}")
    values = values.astype(np.int64)
    if (values < 1).any():
        raise ValueError(f"min_samples must be >= 1, got {int(values[values < 1][0])}")
    return values


class Deferred(NamedTuple):
    """A per-problem parameter on the device, with the device-side check of its values (or None when it was
    validated on the host already). `explain()` re-runs the host check to raise its exact message."""

    values: Tensor
    ok: Tensor | None
    source: object
    check: Callable[[object, int], np.ndarray]

    def explain(self) -> None:
        source = self.source.detach().cpu() if isinstance(self.source, Tensor) else self.source
        self.check(source, self.values.shape[0])


def _on_device(value: object, batch: int, device: torch.device, name: str, integral: bool) -> Deferred:
    """A scalar or (B,) parameter as a (B,) device tensor. Host values are checked now; a tensor's dtype
    and shape are checked now (metadata) and its values on the device (deferred, no host read)."""
    check = check_min_samples if integral else check_eps
    if not isinstance(value, Tensor):
        return Deferred(torch.as_tensor(check(value, batch), device=device), None, value, check)
    if value.dtype == torch.bool:
        raise TypeError(f"{name} must be a number or one number per problem, got bool")
    if value.is_complex() or (integral and value.is_floating_point()):
        kind = "an integer (or integers)" if integral else "real numbers"
        raise TypeError(f"{name} must be {kind}, got dtype {value.dtype}")
    if value.dim() > 1 or (value.dim() == 1 and value.shape[0] != batch):
        raise ValueError(f"{name} must be a scalar or have shape ({batch},) (one per problem), got {tuple(value.shape)}")
    values = value.detach().to(device=device, dtype=torch.int64 if integral else torch.float64).expand(batch)
    ok = values >= 1 if integral else torch.isfinite(values) & (values > 0)
    return Deferred(values.contiguous(), ok, value, check)


def eps_on_device(eps: object, batch: int, device: torch.device) -> Deferred:
    """ε as a (B,) float64 device tensor (finite, > 0)."""
    return _on_device(eps, batch, device, "eps", integral=False)


def min_samples_on_device(min_samples: object, batch: int, device: torch.device) -> Deferred:
    """min_samples as a (B,) int64 device tensor (>= 1)."""
    return _on_device(min_samples, batch, device, "min_samples", integral=True)


def check_quantile(q: object) -> float:
    """A quantile level in [0, 1] (numpy.quantile's convention; percentile p is q = p / 100)."""
    if isinstance(q, (bool, np.bool_)) or not isinstance(q, (numbers.Real, np.floating, np.integer)):
        if isinstance(q, Tensor) and q.dim() == 0 and not q.dtype.is_complex:
            q = q.item()
        else:
            raise TypeError(f"q must be a real number in [0, 1], got {type(q).__name__}")
    value = float(q)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"q must lie in [0, 1] (a quantile, not a percentile), got {value!r}")
    return value


def memory_budget(device: torch.device, budget_bytes: int | None) -> int:
    """Bytes a batched kernel may use for its per-chunk temporaries.

    Default: 512 MiB on the CPU; on CUDA a quarter of the currently free memory, at most 4 GiB.
    """
    if budget_bytes is not None:
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, numbers.Integral) or budget_bytes <= 0:
            raise ValueError(f"memory budget must be a positive integer number of bytes, got {budget_bytes!r}")
        return int(budget_bytes)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(min(free // 4, 4 << 30))
    return 512 << 20


def chunks(batch: int, bytes_per_problem: int, budget: int) -> list[tuple[int, int]]:
    """Split range(batch) into contiguous [start, stop) chunks that fit the budget (>= 1 problem each)."""
    size = max(1, budget // max(1, bytes_per_problem))
    return [(start, min(batch, start + size)) for start in range(0, batch, size)]

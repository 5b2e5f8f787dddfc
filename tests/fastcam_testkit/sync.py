"""Count host syncs and aten ops of a block of code (reusable test helpers).

    with SyncCounter() as syncs, OpCounter() as ops:
        run()
    assert syncs.total <= 1, syncs.sites   # where each sync happened (file:line of the caller)
    print(ops.total, ops.counts.most_common(10))

`SyncCounter` patches, for the duration of the block, every Python-level entry point that reads a
tensor's value back to the host or makes a data-dependent shape (which needs that read on CUDA):
`Tensor.item/.tolist/.__bool__/.__int__/.__float__/.__index__/.cpu/.numpy`, `torch.equal/nonzero/unique/
bincount/masked_select` (functions and methods), `Tensor.nonzero/unique/bincount/masked_select`, and indexing
(`__getitem__`/`__setitem__`) with a boolean mask. On CPU tensors these are not device syncs, but they
are exactly the calls that would be on CUDA, so counting them on the CPU predicts the GPU path. Calls made
while another counted call is running (e.g. `Tensor.unique` calling `torch.unique`) count once.

`OpCounter` is a `TorchDispatchMode` that counts every aten op (views included) that reaches dispatch.
"""
from __future__ import annotations

import collections
import functools
import traceback
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

TENSOR_METHODS = (
    "item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy",
    "nonzero", "unique", "bincount", "masked_select", "equal",
)
TORCH_FUNCTIONS = ("equal", "nonzero", "unique", "bincount", "masked_select")


def _has_mask(index: Any) -> bool:
    """True for a boolean (or uint8) tensor index, alone or inside a tuple/list."""
    items = index if isinstance(index, (tuple, list)) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in items)


class SyncCounter:
    """Context manager counting host-sync call sites (see the module docstring); restores everything on exit."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.sites: list[str] = []
        self._saved: list[tuple[Any, str, Any]] = []
        self._depth = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _record(self, name: str) -> None:
        frame = traceback.extract_stack(limit=3)[0]  # the caller of the patched function
        self.counts[name] += 1
        self.sites.append(f"{name} at {frame.filename}:{frame.lineno}")

    def _wrap(self, name: str, original: Callable[..., Any], counts: Callable[..., bool] | None = None) -> Callable[..., Any]:
        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self._depth == 0 and (counts is None or counts(*args, **kwargs)):
                self._record(name)
            self._depth += 1
            try:
                return original(*args, **kwargs)
            finally:
                self._depth -= 1

        return wrapper

    def _patch(self, owner: Any, attribute: str, name: str, counts: Callable[..., bool] | None = None) -> None:
        original = getattr(owner, attribute)
        self._saved.append((owner, attribute, original))
        setattr(owner, attribute, self._wrap(name, original, counts))

    def __enter__(self) -> "SyncCounter":
        for method in TENSOR_METHODS:
            self._patch(torch.Tensor, method, f"Tensor.{method}")
        for function in TORCH_FUNCTIONS:
            self._patch(torch, function, f"torch.{function}")
        self._patch(torch.Tensor, "__getitem__", "mask-index", lambda self_, index: _has_mask(index))
        self._patch(torch.Tensor, "__setitem__", "mask-assign", lambda self_, index, value: _has_mask(index))
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, attribute, original in reversed(self._saved):
            setattr(owner, attribute, original)
        self._saved.clear()


class OpCounter(TorchDispatchMode):
    """Counts aten ops by name (overload packet) while active."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

"""Counting host syncs and aten ops on CPU, where a CUDA sync cannot be observed directly.

Every call that reads a tensor's value back to the host is a sync on CUDA: `Tensor.item/.tolist/
.__bool__/.__int__/.__float__/.cpu/.numpy`, `torch.equal/nonzero/unique/bincount/masked_select`, and
boolean-mask indexing (its result's shape depends on the data). `count_syncs()` wraps them for the
duration of a `with` block and records each call site, so a test can assert how many a code path makes.
`count_ops()` counts the aten operators that run, through a `TorchDispatchMode`.
"""
from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_TENSOR_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "cpu", "numpy")
_TORCH_READS = ("equal", "nonzero", "unique", "bincount", "masked_select")


@dataclass
class SyncLog:
    """The syncs seen: `sites` maps "name @ file:line" (the caller outside torch) to a count."""

    sites: Counter = field(default_factory=Counter)

    @property
    def count(self) -> int:
        return sum(self.sites.values())

    def __str__(self) -> str:
        return ", ".join(f"{site} ×{n}" for site, n in self.sites.most_common()) or "none"


def _caller() -> str:
    for frame in reversed(traceback.extract_stack()[:-3]):
        if "/torch/" not in frame.filename and "fastcam_testkit" not in frame.filename:
            return f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno}"
    return "?"


@contextmanager
def count_syncs() -> Iterator[SyncLog]:
    """Record every host read of a tensor's value inside the block (restored afterwards)."""
    log = SyncLog()
    saved: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            log.sites[f"{name} @ {_caller()}"] += 1
            return original(*args, **kwargs)

        saved.append((owner, name, original))
        setattr(owner, name, wrapped)

    original_getitem = torch.Tensor.__getitem__

    def getitem(self: torch.Tensor, index: Any) -> Any:
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
            log.sites[f"bool-index @ {_caller()}"] += 1
        return original_getitem(self, index)

    try:
        for name in _TENSOR_READS:
            wrap(torch.Tensor, name)
        for name in _TORCH_READS:
            wrap(torch, name)
        saved.append((torch.Tensor, "__getitem__", original_getitem))
        torch.Tensor.__getitem__ = getitem  # type: ignore[method-assign]
        yield log
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def count_ops() -> Iterator[Counter]:
    """Count the aten operators run inside the block, by name."""
    mode = _OpCounter()
    with mode:
        yield mode.ops

"""Small helpers shared by test modules."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def gen(seed: int) -> torch.Generator:
    """A CPU generator with a fixed seed: every test draws its data reproducibly."""
    return torch.Generator().manual_seed(seed)


def output_of(module: nn.Module, run: Callable[[], object]) -> torch.Tensor:
    """The output of `module` during `run()`, cloned before any later in-place op can touch it."""
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        run()
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0]

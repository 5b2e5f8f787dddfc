"""torch.fx helpers shared by the floors that read a model's graph (Ablation-CAM's split, the deploy checks)."""
from __future__ import annotations

from torch import fx, nn


class LeafTracer(fx.Tracer):
    """fx's tracer, with one module (the target layer) kept as a single `call_module` node: its output is
    the node to follow or cut at."""

    def __init__(self, leaf: nn.Module) -> None:
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return m is self.leaf or super().is_leaf_module(m, module_qualified_name)

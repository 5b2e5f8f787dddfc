"""torch.fx helpers shared by the floors that read a model's graph (Ablation-CAM's split, the deploy checks)."""
from __future__ import annotations

import threading
from typing import Any, Callable

from torch import fx, nn


class LeafTracer(fx.Tracer):
    """fx's tracer, with one module (the target layer) kept as a single `call_module` node: its output is
    the node to follow or cut at.

    While it traces, torch.fx patches `nn.Module.__call__` and `__getattr__` (and the functions it wraps)
    for the whole process; every module call and parameter read of every thread then reaches this tracer.
    Calls and reads from threads other than the tracing one are passed through as plain execution, so
    other threads' inference (of this model or any other) runs as it would without the trace, only
    through fx's wrappers for those milliseconds.
    """

    def __init__(self, leaf: nn.Module) -> None:
        super().__init__()
        self.leaf = leaf
        self._thread = threading.get_ident()

    def _tracing_here(self) -> bool:
        return threading.get_ident() == self._thread

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return m is self.leaf or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self._tracing_here():
            return forward(*args, **kwargs)  # another thread's forward: run it, record nothing
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if not self._tracing_here():
            return attr_val  # another thread reads the parameter itself, not a proxy of it
        return super().getattr(attr, attr_val, parameter_proxy_cache)

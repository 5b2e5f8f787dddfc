"""The one dispatcher between the Triton kernels and their pure-torch references in `fastcam.ops`.

A call resolves its backend once (`resolve_backend`) from the tensors and `backend=` / FASTCAM_BACKEND,
then asks `op(name, backend)` for each fused operation: both implementations sit behind one name with one
signature, so callers never branch on the backend themselves.
"""
from __future__ import annotations

import functools
import importlib
import os
from typing import Any, Callable

from torch import Tensor

BACKENDS = ("auto", "triton", "torch")

#: fused op -> the module of `fastcam.kernels` that implements it (same name, same signature as `fastcam.ops`)
KERNEL_MODULES: dict[str, str] = {
    "combine": "cam_combine",
    "weighted_sum_relu": "cam_combine",
    "upsample_normalize": "upsample_normalize",
    "cluster_filter_weights": "cfcam_filter",
    "evidence_head": "softcam_head",
    "softcam_maps": "softcam_head",
}


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # pragma: no cover - depends on the install
        return False
    return True


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_backend(backend: str | None) -> str:
    """Validate a backend name; None reads FASTCAM_BACKEND (default "auto")."""
    if backend is None:
        backend = os.environ.get("FASTCAM_BACKEND", "auto")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def resolve_backend(backend: str | None, tensor: Tensor) -> str:
    """"triton" or "torch" for one call. "auto" means Triton on CUDA tensors of 2-D maps when Triton
    imports, torch otherwise (3-D volumes always take the torch path: the kernels are 2-D).

    "triton" on CPU tensors needs TRITON_INTERPRET=1 (set before triton is imported): that runs the very
    same kernels in Triton's interpreter, which is how CI tests them.
    """
    backend = check_backend(backend)
    volumetric = tensor.dim() >= 5
    if backend == "auto":
        return "triton" if tensor.is_cuda and not volumetric and triton_available() else "torch"
    if backend == "triton":
        if volumetric:
            raise ValueError("backend='triton' handles 2-D maps only; 3-D volumes need backend='torch' or 'auto'")
        if not triton_available():
            raise RuntimeError("backend='triton' was asked for but triton is not importable")
        if not tensor.is_cuda and not interpreter_enabled():
            raise RuntimeError(
                "backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported"
            )
    return backend


def op(name: str, backend: str) -> Callable[..., Any]:
    """The implementation of fused operation `name` for a resolved backend ("triton" or "torch")."""
    if name not in KERNEL_MODULES:
        raise KeyError(f"no fused operation {name!r}; known: {sorted(KERNEL_MODULES)}")
    if backend == "torch":
        return getattr(importlib.import_module("fastcam.ops"), name)
    if backend != "triton":
        raise ValueError(f"op() takes a resolved backend ('triton' or 'torch'), got {backend!r}")
    module = f"fastcam.kernels.{KERNEL_MODULES[name]}"
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        if exc.name not in (module, "triton", None) and not str(exc).startswith("import of"):
            raise  # a broken import inside an installed kernel module is never hidden
        raise RuntimeError(f"backend='triton' was asked for but the fused kernel {module}.{name} is not available: {exc}") from exc

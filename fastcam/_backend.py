"""Choosing between the Triton kernels and the plain-torch reference path."""
from __future__ import annotations

import functools
import os

from torch import Tensor

BACKENDS = ("auto", "triton", "torch")


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
    """"auto" means Triton on CUDA tensors when Triton imports, torch otherwise.

    "triton" on CPU tensors needs TRITON_INTERPRET=1 (set before triton is imported): that runs the very
    same kernels in Triton's interpreter, which is how CI tests them.
    """
    backend = check_backend(backend)
    if backend == "auto":
        return "triton" if tensor.is_cuda and triton_available() else "torch"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend='triton' was asked for but triton is not importable")
        if not tensor.is_cuda and not interpreter_enabled():
            raise RuntimeError(
                "backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported"
            )
    return backend

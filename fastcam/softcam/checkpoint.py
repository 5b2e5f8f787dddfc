"""SoftCAM checkpoints: safetensors files (tensors only; nothing is unpickled or executed)."""
from __future__ import annotations

import os
from pathlib import Path

from torch import nn


def save(net: nn.Module, path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> Path:
    """Write the network's weights (parameters and buffers) to a safetensors file; returns the path.

    Tensors shared between modules are stored once (safetensors' `save_model`).
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
    from safetensors.torch import save_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(net, str(path), metadata={"format": "pt", "written_by": "fastcam.softcam", **(metadata or {})})
    return path


def load(net: nn.Module, path: str | os.PathLike[str], strict: bool = True) -> nn.Module:
    """Load weights written by `save` into `net` (in place, onto its devices); returns `net`.

    With `strict=True` (default) missing or unexpected tensors raise a RuntimeError naming them.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    from safetensors.torch import load_model

    load_model(net, str(path), strict=strict)
    return net

"""One file per method; each adds a `_get_weights` hook over the shared path in `base.py`.

`registry` (torch-free) names them all; the classes load lazily (PEP 562).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "BaseCAM": "fastcam.methods.base",
    "CFCAM": "fastcam.methods.cfcam",
    "GradCAM": "fastcam.methods.gradcam",
    "GradCAMPlusPlus": "fastcam.methods.gradcampp",
    "ScoreCAM": "fastcam.methods.scorecam",
    "SoftCAM": "fastcam.methods.softcam",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fastcam.methods' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})

"""One file per method; each adds a `_get_weights` (or `_get_lowres`) hook over the shared path in `base.py`.

`registry` (torch-free) names them all; the classes load lazily (PEP 562).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "AblationCAM": "fastcam.methods.ablationcam",
    "BaseCAM": "fastcam.methods.base",
    "CFCAM": "fastcam.methods.cfcam",
    "EigenCAM": "fastcam.methods.eigencam",
    "EigenGradCAM": "fastcam.methods.eigengradcam",
    "GradCAM": "fastcam.methods.gradcam",
    "GradCAMElementWise": "fastcam.methods.gradcam_elementwise",
    "GradCAMPlusPlus": "fastcam.methods.gradcampp",
    "HiResCAM": "fastcam.methods.hirescam",
    "ISCAM": "fastcam.methods.iscam",
    "LayerCAM": "fastcam.methods.layercam",
    "SSCAM": "fastcam.methods.sscam",
    "ScoreCAM": "fastcam.methods.scorecam",
    "SoftCAM": "fastcam.methods.softcam",
    "XGradCAM": "fastcam.methods.xgradcam",
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

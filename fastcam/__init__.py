"""fastcam: fast, batched, on-device class activation maps for CNNs and vision transformers.

>>> import fastcam
>>> maps = fastcam.GradCAM(model, "layer4")(images)      # (B, H, W) in [0, 1]

The public names load lazily (PEP 562), so `import fastcam` and `fastcam --help` do not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> "module:attribute" (module alone for sub-packages)
_EXPORTS: dict[str, str] = {
    "Explanation": "fastcam.explanation:Explanation",
    "NonFiniteError": "fastcam._validation:NonFiniteError",
    "UninformativeMapWarning": "fastcam._validation:UninformativeMapWarning",
    "BaseCAM": "fastcam.methods:BaseCAM",
    "GradCAM": "fastcam.methods:GradCAM",
    "GradCAMPlusPlus": "fastcam.methods:GradCAMPlusPlus",
    "ScoreCAM": "fastcam.methods:ScoreCAM",
    "CFCAM": "fastcam.methods:CFCAM",
    "LayerCAM": "fastcam.methods:LayerCAM",
    "XGradCAM": "fastcam.methods:XGradCAM",
    "HiResCAM": "fastcam.methods:HiResCAM",
    "GradCAMElementWise": "fastcam.methods:GradCAMElementWise",
    "EigenCAM": "fastcam.methods:EigenCAM",
    "EigenGradCAM": "fastcam.methods:EigenGradCAM",
    "AblationCAM": "fastcam.methods:AblationCAM",
    "SSCAM": "fastcam.methods:SSCAM",
    "ISCAM": "fastcam.methods:ISCAM",
    "SoftCAM": "fastcam.methods:SoftCAM",
    "graphed": "fastcam.methods.graphed:graphed",
    "softcam": "fastcam.softcam",
    "deploy": "fastcam.deploy",
    "reshape": "fastcam.reshape",
    "targets": "fastcam.targets",
    "models": "fastcam.models",
    "metrics": "fastcam.metrics",
    "explain_dataset": "fastcam.pipeline:explain_dataset",
    "open_run": "fastcam.pipeline:open_run",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'fastcam' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = importlib.import_module(module)
    if attr:
        value = getattr(value, attr)
    globals()[name] = value  # cache: the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})

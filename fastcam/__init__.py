"""fastcam: fast, batched, on-device class activation maps for CNNs and vision transformers.

>>> import fastcam
>>> maps = fastcam.GradCAM(model, "layer4")(images)      # (B, H, W) in [0, 1]

The public names load lazily (PEP 562), so `import fastcam` and `fastcam --help` do not import torch.
The explainer classes are the registry's (`fastcam.methods.registry`); the sub-packages are reachable as
attributes after a plain `import fastcam` (`fastcam.cluster`, `fastcam.io`, ...).
"""
from __future__ import annotations

from fastcam import errors as _errors
from fastcam import methods as _methods
from fastcam._lazy import lazy_exports

__version__ = "0.1.0"

#: the sub-packages and modules reachable as `fastcam.<name>`
_SUBMODULES = ("cluster", "deploy", "errors", "io", "methods", "metrics", "models", "ops", "pipeline", "reshape",
               "softcam", "targets")

#: public name -> its module (a sub-module's own name: that module)
_EXPORTS: dict[str, str] = {
    **{name: "fastcam.methods" for name in _methods.__all__},  # every registered explainer and the bases
    **{name: f"fastcam.{name}" for name in _SUBMODULES},
    **{name: "fastcam.errors" for name in _errors.__all__},  # every error and warning class
    "Explanation": "fastcam.explanation",
    "graphed": "fastcam.methods.graphed",
    "Preprocess": "fastcam.io",
    "Run": "fastcam.io",
    "open_run": "fastcam.io",
    "verify_run": "fastcam.io.store",
    "explain_dataset": "fastcam.pipeline",
    "explain_folder": "fastcam.pipeline",
}

__all__ = sorted([*_EXPORTS, "__version__"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

"""One file per method; each adds a `_get_weights` (or `_get_lowres`) hook over the shared path in `base.py`.

`registry` (torch-free) names them all; this package exports the registered classes under their class
names, with the bases (`Explainer`, `BaseCAM`, `GradientCAM`), and loads them lazily (PEP 562).
"""
from fastcam._lazy import lazy_exports
from fastcam.methods.registry import METHODS

#: public name -> its module: the registered classes (read from the registry), then the bases
_EXPORTS: dict[str, str] = {
    **{info.class_path.partition(":")[2]: info.class_path.partition(":")[0] for info in METHODS.values()},
    "BaseCAM": "fastcam.methods.base",
    "Explainer": "fastcam.methods.base",
    "GradientCAM": "fastcam.methods.base",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

"""Public names of a package that load on first access (PEP 562), so importing the package stays cheap.

Used where a torch-free caller (the CLI's `--help`) imports a sub-module of a package whose other
modules import torch, and by `fastcam` itself, so that `import fastcam` loads no torch.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(`__getattr__`, `__dir__`) for `package`, where `exports` maps each public name to its module.

    A name is imported from its module on first access and cached on the package. A name that maps to
    the package's own sub-module of that name (`"cluster": "fastcam.cluster"`) is that module. No other
    exported name may also be a sub-module's name (importing that sub-module would rebind it on the
    package).
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        loaded = importlib.import_module(module)
        value = loaded if module == f"{package}.{name}" else getattr(loaded, name)
        setattr(sys.modules[package], name, value)  # cache: the next access is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__

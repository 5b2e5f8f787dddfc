"""Triton kernels, installed as fastcam.kernels (setup.py package_dir). Import is lazy: triton is optional.

This folder sits at the repository root, and the root is on `sys.path` whenever Python starts there
(`python -m pytest`, `python -m fastcam`, `torchrun -m fastcam`). So that it never shadows an installed
distribution named `kernels` (Hugging Face's, which transformers imports), the folder is only ever fastcam's
under its installed name: imported as a top-level `kernels` it steps aside, loading the installed
distribution in its place, or failing as a missing module would where none is installed.
"""
if __name__ != "fastcam.kernels":
    import importlib.util
    import os
    import sys
    from importlib.machinery import PathFinder

    def _step_aside(name: str) -> None:
        if "." in name:
            raise ImportError(f"fastcam's Triton kernels are imported as fastcam.kernels, not as {name!r}")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != root]
        spec = None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = PathFinder.find_spec(name, path) if finder is PathFinder else find_spec(name, None)
            if spec is not None:
                break
        if spec is None or spec.loader is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # the import statement returns what sys.modules holds after this runs
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise

    _step_aside(__name__)

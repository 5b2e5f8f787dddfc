"""The floors of the package (shared/DESIGN.md): each imports only floors below it.

Imports are read from the source with `ast` (nothing is executed), including those inside functions and
relative ones, so a lazy import cannot hide a cycle.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

APPLICATIONS = ("fastcam.pipeline", "fastcam.io", "fastcam.cli", "fastcam.benchmark", "fastcam.evaluate", "fastcam.demo",
                "fastcam.serve", "fastcam.ray")


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved against `package`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from fastcam import pipeline`
    return names


def offending_imports(folder: str, package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in imported_modules(path, package):
            if any(name == f or name.startswith(f + ".") for f in forbidden) and not name.startswith(allowed):
                found.append(f"{path.relative_to(ROOT)}: {name}")
    return found


def test_kernels_import_only_ops() -> None:
    """kernels/ (installed as fastcam.kernels) sits on fastcam.ops: nothing of fastcam above it."""
    assert list((ROOT / "kernels").glob("*.py")), "no kernel modules found"
    assert offending_imports("kernels", "fastcam.kernels", ("fastcam",), allowed=("fastcam.ops", "fastcam.kernels")) == []


def test_ops_import_nothing_above_them() -> None:
    assert offending_imports("fastcam/ops", "fastcam.ops", ("fastcam",), allowed=("fastcam.ops",)) == []


#: the floors above methods/ and below the pipeline: model specs and the one loader, devices and AMP names
MODELS = ("fastcam.models", "fastcam._device")
#: the commands beside the pipeline: each builds on models/ and io/, none on the pipeline or another command
COMMANDS = ("fastcam.benchmark", "fastcam.evaluate", "fastcam.deploy")


@pytest.mark.parametrize("floor,forbidden", [
    ("methods", APPLICATIONS + ("fastcam.kernels", "fastcam.models")),
    ("softcam", APPLICATIONS + ("fastcam.methods", "fastcam.kernels", "fastcam.models")),
    ("cluster", APPLICATIONS + ("fastcam.methods", "fastcam.softcam", "fastcam.kernels", "fastcam.models",
                                "fastcam._device")),
    ("metrics", APPLICATIONS + ("fastcam.methods", "fastcam.softcam", "fastcam.kernels", "fastcam.models",
                                "fastcam._device")),
    # the models floor: below io/ and the pipeline (the loader of every command), above methods/ (softcam)
    ("models", APPLICATIONS + COMMANDS + ("fastcam.kernels",)),
    # the commands beside the pipeline: none imports it (models/ holds the one loader they share)
    *[(c.rpartition(".")[2], tuple(a for a in APPLICATIONS + COMMANDS if a not in (c, "fastcam.io"))
       + ("fastcam.kernels",)) for c in COMMANDS],
    # other libraries' APIs over the explainers: a library floor, for any application to use
    ("compat", APPLICATIONS + ("fastcam.kernels",)),
])
def test_library_floors_do_not_import_floors_above(floor: str, forbidden: tuple[str, ...]) -> None:
    """Methods reach kernels only through the dispatcher (`fastcam._backend.op`), never by import;
    metrics stay pure (tensors in, tensors out); the commands share models/, not the pipeline."""
    assert offending_imports(f"fastcam/{floor}", f"fastcam.{floor}", forbidden) == []


@pytest.mark.parametrize("floor", ["pipeline", "io"])
def test_the_engine_floors_do_not_import_the_ray_adapter(floor: str) -> None:
    """fastcam.ray sits on the pipeline (beside the other adapters): the pipeline and io never need it."""
    assert offending_imports(f"fastcam/{floor}", f"fastcam.{floor}", ("fastcam.ray", "ray")) == []


def test_importing_fastcam_never_imports_ray() -> None:
    """Ray is an optional extra: fastcam, its pipeline and its CLI load without it (a fresh interpreter)."""
    code = ("import sys, fastcam, fastcam.pipeline, fastcam.cli; fastcam.explain_dataset; fastcam.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_serve_is_an_application_beside_the_others() -> None:
    """fastcam.serve adapts the one explain path (pipeline, io, methods) to HTTP: it imports no other application
    floor, and only the CLI imports it."""
    siblings = ("fastcam.cli", "fastcam.benchmark", "fastcam.evaluate", "fastcam.demo", "fastcam.deploy", "fastcam.ray",
                "fastcam.compat")
    assert offending_imports("fastcam/serve", "fastcam.serve", siblings) == []
    users = [found for folder in sorted(p.name for p in (ROOT / "fastcam").iterdir() if p.is_dir())
             if folder not in ("serve", "cli")
             for found in offending_imports(f"fastcam/{folder}", f"fastcam.{folder}", ("fastcam.serve",))]
    assert users == []


def test_the_check_sees_imports_of_every_form(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import fastcam.io.store\nfrom fastcam import pipeline\nfrom ..evaluate import app\n"
                      "def f():\n    from fastcam.cli import main\n")
    names = imported_modules(module, "fastcam.metrics")
    assert {"fastcam.io.store", "fastcam.pipeline", "fastcam.evaluate.app", "fastcam.cli"} <= names


def test_device_module_imports_nothing_of_fastcam() -> None:
    """fastcam._device (AMP names, devices) sits at the bottom: every floor may use it."""
    assert [n for n in imported_modules(ROOT / "fastcam" / "_device.py", "fastcam") if n.startswith("fastcam")] == []


def test_pipeline_sits_above_models() -> None:
    """The pipeline uses models/ (the one loader); nothing of models/ reaches up to it (checked above), and
    the pipeline imports no command beside it."""
    assert offending_imports("fastcam/pipeline", "fastcam.pipeline", COMMANDS + ("fastcam.cli", "fastcam.demo")) == []

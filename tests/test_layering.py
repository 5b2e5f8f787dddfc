"""The floors of the package (shared/DESIGN.md): each imports only floors below it.

Imports are read with `ast` (nothing is executed), including those inside functions, so a lazy import
cannot hide a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _fastcam_imports(folder: str) -> dict[str, set[str]]:
    return {
        str(path.relative_to(ROOT)): {m for m in imported_modules(path) if m.split(".")[0] == "fastcam"}
        for path in sorted((ROOT / folder).rglob("*.py"))
    }


def test_kernels_import_only_ops() -> None:
    """kernels/ sits on fastcam.ops: it may import the ops floor and its own modules, nothing above."""
    found = _fastcam_imports("kernels")
    assert found, "no kernel modules found"
    bad = {path: sorted(m for m in mods if not m.startswith(("fastcam.ops", "fastcam.kernels"))) for path, mods in found.items()}
    assert not any(bad.values()), f"kernels import from above their floor: {bad}"


def test_ops_import_nothing_above_them() -> None:
    found = _fastcam_imports("fastcam/ops")
    bad = {path: sorted(m for m in mods if not m.startswith("fastcam.ops")) for path, mods in found.items()}
    assert not any(bad.values()), f"fastcam.ops imports from above its floor: {bad}"


@pytest.mark.parametrize("floor,forbidden", [
    ("fastcam/methods", ("fastcam.pipeline", "fastcam.io", "fastcam.cli", "fastcam.benchmark", "fastcam.evaluate", "fastcam.demo", "fastcam.kernels")),
    ("fastcam/softcam", ("fastcam.pipeline", "fastcam.io", "fastcam.cli", "fastcam.benchmark", "fastcam.evaluate", "fastcam.demo", "fastcam.methods", "fastcam.kernels")),
    ("fastcam/cluster", ("fastcam.methods", "fastcam.pipeline", "fastcam.io", "fastcam.cli", "fastcam.softcam", "fastcam.kernels")),
])
def test_library_floors_do_not_import_applications(floor: str, forbidden: tuple[str, ...]) -> None:
    """Methods reach kernels only through the dispatcher (`fastcam._backend.op`), never by import."""
    found = _fastcam_imports(floor)
    bad = {path: sorted(m for m in mods if m.startswith(forbidden)) for path, mods in found.items()}
    assert not any(bad.values()), f"{floor} imports from above its floor: {bad}"

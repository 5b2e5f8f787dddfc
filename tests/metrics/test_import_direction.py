"""`fastcam.metrics` is pure (tensors in, tensors out): it imports none of the layers that use it.

Read from the source with `ast`, so an import hidden inside a function counts too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import fastcam.metrics

#: the applications and the run machinery above the metrics
FORBIDDEN = ("fastcam.pipeline", "fastcam.io", "fastcam.evaluate", "fastcam.cli", "fastcam.demo",
             "fastcam.benchmark")


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


def test_metrics_import_nothing_above_them() -> None:
    root = Path(fastcam.metrics.__file__).parent
    offending = {
        f"{path.relative_to(root.parent.parent)}: {name}"
        for path in sorted(root.rglob("*.py"))
        for name in imported_modules(path, "fastcam.metrics")
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert not offending, "fastcam.metrics must stay pure; it imports:\n" + "\n".join(sorted(offending))


def test_the_check_sees_imports_of_every_form(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import fastcam.io.store\nfrom fastcam import pipeline\nfrom ..evaluate import app\n"
                      "def f():\n    from fastcam.cli import main\n")
    names = imported_modules(module, "fastcam.metrics")
    assert {"fastcam.io.store", "fastcam.pipeline", "fastcam.evaluate.app", "fastcam.cli"} <= names

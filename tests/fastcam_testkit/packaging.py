"""What setup.py declares, read from its source (the installed metadata lags behind an edit until a reinstall)."""
from __future__ import annotations

import ast
import re
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _setup_keyword(name: str) -> object:
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py passes no {name}=")


def setup_extras() -> dict[str, list[str]]:
    """setup.py's `extras_require`: extra name -> its requirement strings."""
    extras = _setup_keyword("extras_require")
    assert isinstance(extras, dict)
    return extras


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a requirement string ("mkdocstrings[python]>=0.26" -> "mkdocstrings")."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)).lower()  # type: ignore[union-attr]


def extra_only_modules() -> set[str]:
    """The installed top-level modules that only extras bring (none of them is a core requirement)."""
    core = {requirement_name(r) for r in _setup_keyword("install_requires")}  # type: ignore[union-attr]
    extra = {requirement_name(r) for reqs in setup_extras().values() for r in reqs} - core
    return {module for module, dists in packages_distributions().items()
            if any(requirement_name(d) in extra for d in dists)}

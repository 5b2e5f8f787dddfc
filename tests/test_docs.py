"""The documentation builds with `mkdocs build --strict`: every API page's docstrings resolve, every
cross-reference and nav entry exists (a broken one is a warning, which --strict turns into a failure)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_builds_strict(tmp_path: Path) -> None:
    # in the test extra, so CI always builds; the GPU machine's image has no mkdocs (nothing to build there)
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "api" / "methods" / "index.html").is_file()

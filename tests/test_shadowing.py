"""Nothing in the repository shadows an installed distribution when Python starts at the repository root.

`python -m pytest`, `python -m fastcam` and `torchrun -m fastcam` put the root on `sys.path` first. The
design's top-level `kernels/` folder (installed as `fastcam.kernels`) once shadowed Hugging Face's `kernels`
distribution, which transformers imports: 91 test errors on a fresh clone. These tests start fresh
interpreters at the root, as those commands do.
"""
from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the only names the root and the test path (pytest.ini `pythonpath = tests`) may import as regular
#: packages or modules: fastcam itself, the test helpers, the build script
OWN_TOP_LEVEL = {"fastcam", "kernels", "fastcam_testkit", "setup", "conftest"}


def run_at_root(code: str, *args: str, extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if extra_path is not None:
        env["PYTHONPATH"] = str(extra_path)  # after the root: `-c` puts the current folder first
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )


def make_stand_in_distribution(folder: Path) -> Path:
    """A distribution named `kernels` (package and metadata), as Hugging Face's would be installed."""
    (folder / "kernels").mkdir(parents=True)
    (folder / "kernels" / "__init__.py").write_text("CUDAProperties = 'stand-in'\n")
    info = folder / "kernels-9.9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kernels\nVersion: 9.9.9\n")
    (info / "top_level.txt").write_text("kernels\n")
    return folder


def test_installed_kernels_distribution_wins_at_the_root(tmp_path: Path) -> None:
    site = make_stand_in_distribution(tmp_path / "site")
    result = run_at_root(
        """
        import importlib.metadata, sys
        from kernels import CUDAProperties
        import fastcam.kernels.cam_combine
        import fastcam.kernels
        import kernels
        print(CUDAProperties, importlib.metadata.version("kernels"), kernels.__file__, fastcam.kernels.__file__)
        """,
        extra_path=site,
    )
    assert result.returncode == 0, result.stderr
    value, version, standin, ours = result.stdout.split()
    assert (value, version) == ("stand-in", "9.9.9")
    assert Path(standin) == site / "kernels" / "__init__.py"
    assert Path(ours) == ROOT / "kernels" / "__init__.py"


def test_top_level_kernels_is_missing_where_no_distribution_is_installed() -> None:
    # -S: no site-packages, so no `kernels` distribution anywhere; the root is put first by hand
    result = run_at_root(
        """
        import sys
        sys.path.insert(0, "")
        try:
            import kernels
        except ModuleNotFoundError as error:
            print("missing", error.name, "kernels" in sys.modules)
        else:
            print("imported", kernels.__file__)
        """,
        "-S",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["missing", "kernels", "False"]


def test_kernels_submodules_are_not_importable_top_level() -> None:
    result = run_at_root(
        """
        try:
            import kernels.cam_combine as module
        except ImportError as error:
            print("refused")
        else:
            print("imported", module.__file__)
        """
    )
    assert result.stdout.split() == ["refused"], result.stdout + result.stderr


def importable_names(folder: Path) -> set[str]:
    """Top-level names a folder on sys.path provides as regular packages or modules (namespace folders
    never shadow: a regular package anywhere on the path wins over them)."""
    names = {path.stem for path in folder.glob("*.py")}
    names |= {path.parent.name for path in folder.glob("*/__init__.py")}
    return names


def test_nothing_at_the_root_or_on_the_test_path_shadows_an_installed_distribution() -> None:
    provided = importable_names(ROOT) | importable_names(ROOT / "tests")
    new = {name for name in provided - OWN_TOP_LEVEL if not name.startswith("test_")}
    assert not new, f"new top-level names at the root or in tests/: {sorted(new)}"
    installed = importlib.metadata.packages_distributions()
    clashes = {
        name: installed[name] for name in provided - {"kernels"}
        if name in installed and set(installed[name]) != {"fastcam"}
    }
    assert not clashes, f"repository names shadow installed distributions: {clashes}"

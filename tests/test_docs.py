"""The documentation builds with `mkdocs build --strict`: every API page's docstrings resolve, every
cross-reference and nav entry exists (a broken one is a warning, which --strict turns into a failure)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fastcam_testkit.packaging import setup_extras

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_builds_strict_without_a_warning(tmp_path: Path) -> None:
    # in the test extra, so CI always builds; the GPU machine's image has no mkdocs (nothing to build there)
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    # never --quiet: it lowers mkdocs' log level to errors, so --strict stops counting warnings (griffe's
    # "parameter not in the signature" passed unseen that way)
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    log = result.stdout + result.stderr
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, "mkdocs warned:\n" + "\n".join(warnings)
    assert result.returncode == 0, log
    assert (tmp_path / "site" / "api" / "methods" / "index.html").is_file()


def test_readme_keeps_the_essentials_and_links_resolve() -> None:
    """The README keeps the quick start, API essentials, guarantees and status; the rest lives in docs/,
    and every relative link of the README points at a file that exists."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", readme, flags=re.M)
    for wanted in ("Quick start", "Python API", "Guarantees for embedding", "Documentation", "Layout",
                   "Status", "Troubleshooting"):
        assert any(h.startswith(wanted) for h in headings), f"README.md lost its {wanted!r} section"
    for guarantee in ("Hooks live for one call", "Thread safety", "Model-side errors"):
        assert guarantee in readme
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme)
    assert links, "the README links no docs page"
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, f"README.md links missing files: {missing}"
    anchors = re.findall(r"\]\(#([^)]+)\)", readme)
    slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
    assert set(anchors) <= slugs, f"README.md anchors without a heading: {set(anchors) - slugs}"


def _quick_start_commands(readme: str) -> list[list[str]]:
    """The commands of each ```bash block of the README's quick start, split at `&&`."""
    import re

    section = readme[readme.index("## Quick start"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [[command.strip() for command in block.strip().split("&&")] for block in blocks]


def test_readme_quick_start_core_install_extras_table_and_ci_agree() -> None:
    """The main job installs the core only (its demo needs no extra: tests/test_demo.py), the tests add
    `[test]`, a table says what every extra of setup.py is for, and `.ci/run` runs exactly the README's
    set-up and test command."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    main_job, tests = _quick_start_commands(readme)
    assert main_job[0] == "python3 -m venv .venv"
    assert main_job[1] == ".venv/bin/pip install -c constraints.txt -e ."  # the core, no extra
    assert main_job[2].startswith(".venv/bin/fastcam demo")
    assert tests == ['.venv/bin/pip install -c constraints.txt -e ".[test]"',
                     ".venv/bin/pip install --no-deps -c constraints.txt grad-cam", ".venv/bin/python -m pytest"]
    rows = set(re.findall(r"^\| `fastcam\[(\w+)\]` \|", readme, flags=re.M))
    missing = set(setup_extras()) - rows
    assert not missing, f"README.md's extras table lacks {sorted(missing)} (setup.py declares them)"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    wanted = [*main_job[:2], *tests]  # the demo itself runs in the suite
    found = [ci.index(command) if command in ci else -1 for command in wanted]
    assert -1 not in found and found == sorted(found), f".ci/run must run {wanted} in this order"

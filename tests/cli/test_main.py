"""The `fastcam` dispatcher: every sub-command registered once, `--help` imports no torch, and argparse
stays inside fastcam.cli."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import fastcam
from fastcam.cli import SUBCOMMANDS, build_parser, main

REPO = Path(__file__).resolve().parents[2]


def test_parser_has_every_subcommand_registered_once() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"explain", "demo", "report"} <= set(sub.choices)
    assert set(sub.choices) == {command.NAME for command in SUBCOMMANDS}
    assert len(SUBCOMMANDS) == len(set(SUBCOMMANDS))
    assert main([]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["explain", "--help"])
    assert exc.value.code == 0


_HELP_WITHOUT_TORCH = """
import sys
from fastcam.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert exc.code == 0, exc.code
else:
    raise AssertionError("--help did not exit")
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded[:5]
"""


@pytest.mark.parametrize("command", [[], *([c.NAME] for c in SUBCOMMANDS)], ids=lambda c: " ".join(c) or "fastcam")
def test_help_imports_no_torch(command: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", _HELP_WITHOUT_TORCH, *command, "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage: fastcam" in proc.stdout


def test_argparse_stops_at_the_cli() -> None:
    """Library functions take keyword arguments, never an argparse Namespace: only fastcam.cli imports argparse."""
    package = Path(fastcam.__file__).parent
    cli = package / "cli"
    users = []
    for path in sorted(package.rglob("*.py")):
        if cli in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if "argparse" in names:
                users.append(str(path.relative_to(package.parent)))
    assert not users, f"argparse outside fastcam/cli: {users}"

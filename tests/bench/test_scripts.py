"""The scripts under bench/ share one timer (`fastcam.benchmark.timing`) and import no other script."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*(ROOT / "bench").glob("*.py"), *(ROOT / "bench" / "campaign").glob("*.py")])


def test_no_script_imports_another_or_times_calls_itself() -> None:
    siblings = {path.stem for path in SCRIPTS}
    assert {"bench_dbscan", "bench_softcam_head", "conftest"} <= siblings
    found = []
    for path in SCRIPTS:
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name} imports {n}" for n in names if n.split(".")[0] in siblings | {"bench", "campaign"}]
        for own_timer in ("spec_from_file_location", "cuda.Event(", "elapsed_time(", "class Timer"):
            if own_timer in source:
                found.append(f"{path.name}: {own_timer}")
    assert found == []

"""bench/gpu_campaign.sh runs end to end in its --dry-run: the same code paths as on an H100/H200 (tests,
speed, scale sections, the environment record, the JSON and the summary) on the CPU at tiny sizes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_campaign_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "campaign"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", "bench/gpu_campaign.sh", "--dry-run", "--out", str(out)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    log = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, log
    environment = json.loads((out / "environment.json").read_text())
    assert environment["dry_run"] and environment["ceilings"]["copy_gbps"] > 0 and environment["commit"]
    tests = json.loads((out / "tests.json").read_text())
    assert tests["passed"] >= 1 and tests["failed"] == tests["errors"] == 0, tests
    bench = json.loads((out / "bench_dry_cl.json").read_text())
    assert bench["config"]["channels_last"] is True, bench["config"]
    assert all(r["status"] == "ok" for r in bench["results"]), bench["results"]
    scale = json.loads((out / "scale.json").read_text())
    assert {r["method"] for r in scale["runs"]} == {"gradcam", "cfcam", "softcam"}
    assert all(r["explained"] == r["images"] for r in scale["runs"]) and scale["largest_batch"]
    assert list(out.glob("kernels_combine*.json")) and list(out.glob("softcam_head*.json")) and list(out.glob("dbscan_*.json"))
    summary = (out / "SUMMARY.md").read_text()
    assert "## tests" in summary and "## scale" in summary and "## speed" in summary


def test_campaign_refuses_unknown_arguments() -> None:
    result = subprocess.run(["bash", "bench/gpu_campaign.sh", "--sections"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    result = subprocess.run(["bash", "bench/gpu_campaign.sh", "--bogus"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "unknown argument --bogus" in result.stderr


def test_a_cut_test_section_still_names_its_failures(tmp_path: Path) -> None:
    """pytest cut by the section's limit writes no junit.xml: the counts and names come from its -v log."""
    log = tmp_path / "tests.log"
    log.write_text("tests/a.py::test_x PASSED   [ 10%]\ntests/a.py::test_y[GradCAM-cuda] FAILED   [ 20%]\n"
                   "tests/b.py::test_z ERROR   [ 30%]\ntests/b.py::test_w SKIPPED (needs a GPU)   [ 40%]\n")
    out = tmp_path / "tests.json"
    subprocess.run([sys.executable, "bench/campaign/junit_summary.py", str(tmp_path / "junit.xml"), "--log", str(log),
                    "--out", str(out)], cwd=ROOT, check=True, capture_output=True)
    tests = json.loads(out.read_text())
    assert (tests["passed"], tests["failed"], tests["errors"], tests["skipped"]) == (1, 1, 1, 1)
    assert [f["test"] for f in tests["failures"]] == ["tests/a.py::test_y[GradCAM-cuda]", "tests/b.py::test_z"]
    assert tests["incomplete"]

"""Ratios, the issue's targets and the Markdown tables, by hand."""
from __future__ import annotations

import pytest

from fastcam import benchmark
from fastcam.benchmark import BenchConfig, BenchReport, Result, Timing


def _result(key: str, group: str, ips: float, method: str | None = None) -> Result:
    return Result(key=key, name=key, group=group, method=method or key, status="ok", timing=Timing.of([8 / ips]),
                  images_per_s=ips)


def test_ratios_and_targets_by_hand() -> None:
    results = [_result("inference", "baseline", 100.0), _result("gradcam", "fastcam", 90.0),
               _result("cfcam", "fastcam", 60.0), _result("torchcam-gradcam", "peer", 30.0, "gradcam"),
               _result("released-cfcam", "peer", 12.0, "cfcam"), _result("torchcam-scorecam", "peer", 2.0, "scorecam"),
               Result(key="pgc-gradcam", name="pgc", group="peer", method="gradcam", status="skipped", reason="x")]
    r = benchmark.ratios(results)
    assert r["vs_inference"]["gradcam"] == pytest.approx(0.9)
    # only the same method across implementations: no Grad-CAM ÷ released CF-CAM, no CF-CAM ÷ Grad-CAM
    assert r["gradcam"] == pytest.approx({"torchcam-gradcam": 3.0})
    assert r["cfcam"] == pytest.approx({"released-cfcam": 5.0})
    report = BenchReport(config=BenchConfig(model="resnet18", size=224, batch=8, device="cpu"),
                         environment={"device_name": "cpu", "versions": {"torch": "x"}, "torch_threads": 2,
                                      "date": "today"}, results=results, ratios=r)
    targets = {t["target"]: t for t in benchmark.check_targets(report)}
    loop = targets["CF-CAM >= 4x the released per-image loop (CPU)"]
    assert loop["ratio"] == pytest.approx(5.0) and loop["met"] is True and loop["setting_matches"] is True
    assert targets["CF-CAM >= 0.8x our Grad-CAM (CPU)"]["met"] is False
    md = benchmark.markdown_tables(report)
    assert "| pgc | skipped |" in md and "| 1 | 90.00 | 0.90 |" in md
    assert "| CF-CAM | cfcam | released-cfcam | 5.00 |" in md and "| Grad-CAM | gradcam | torchcam-gradcam | 3.00 |" in md
    assert "torchcam-scorecam |" not in md.split("ratio |")[-1]  # a peer with no fastcam counterpart timed: no cell
    assert md.count("| Grad-CAM |") == 1 and "—" not in md.split("other implementation")[-1].split("| target")[0]

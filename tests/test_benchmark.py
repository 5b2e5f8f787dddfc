"""`fastcam bench`: the CLI smoke run (tiny model), the timing statistics, ratios/targets, and the
released-code CF-CAM loop against fastcam's CFCAM(variant="reference")."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

import fastcam
from fastcam import benchmark
from fastcam.benchmark import BenchConfig, BenchReport, ReleasedCFCAMLoop, Result, Timing
from fastcam.cli import main
from fastcam.models import tiny_resnet


def test_bench_cli_smoke_writes_valid_json(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    contenders = "inference,gradcam,softcam-inference,softcam,torchcam-gradcam,captum-gradcam,pgc-gradcam,released-cfcam"
    rc = main(["bench", "--model", "tiny_resnet", "--size", "32", "--batch", "2", "--device", "cpu",
               "--repeats", "1", "--warmup", "0", "--contenders", contenders, "--out", str(out), "--quiet",
               "--markdown", str(tmp_path / "bench.md")])
    assert rc == 0
    data = json.loads(out.read_text())
    env = data["environment"]
    for key in ("date", "device_name", "commit", "versions", "torch_threads"):
        assert key in env
    assert env["versions"]["torch"] == torch.__version__
    results = {r["key"]: r for r in data["results"]}
    assert list(results) == contenders.split(",")
    for key in ("inference", "gradcam", "torchcam-gradcam", "captum-gradcam", "released-cfcam"):
        r = results[key]
        assert r["status"] == "ok", r["reason"]
        assert len(r["timing"]["times_s"]) == 1 and r["timing"]["median_s"] > 0
        assert r["images_per_s"] == pytest.approx(2 / r["timing"]["median_s"])
    try:
        import pytorch_grad_cam  # noqa: F401
    except Exception:
        assert results["pgc-gradcam"]["status"] == "skipped" and "not importable" in results["pgc-gradcam"]["reason"]
    ratios = data["ratios"]
    assert ratios["vs_inference"]["inference"] == pytest.approx(1.0)
    assert ratios["gradcam"]["torchcam-gradcam"] == pytest.approx(
        results["gradcam"]["images_per_s"] / results["torchcam-gradcam"]["images_per_s"])
    assert {t["target"] for t in data["targets"]} == {t[0] for t in benchmark.TARGETS if t[4] == "cpu"}
    assert all(t["setting_matches"] is False for t in data["targets"])   # tiny_resnet is not the target setting
    printed = capsys.readouterr().out
    assert "| fastcam GradCAM |" in printed and (tmp_path / "bench.md").read_text() in printed


def test_bench_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown contenders"):
        benchmark.run_benchmark(BenchConfig(model="tiny_resnet", size=32, batch=1, device="cpu",
                                            contenders=("gradcam", "fastgradcam")), progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            benchmark.run_benchmark(BenchConfig(model="tiny_resnet", device="cuda"), progress=False)
    assert main(["bench", "--model", "no_such_model", "--device", "cpu", "--quiet"]) == 2


def test_timing_statistics() -> None:
    t = Timing.of([0.4, 0.1, 0.3, 0.2, 10.0])
    assert (t.median_s, t.min_s, t.max_s) == (0.3, 0.1, 10.0)
    assert (t.q1_s, t.q3_s) == pytest.approx((0.2, 0.4))
    calls = []
    timing = benchmark.time_callable(lambda: (calls.append(1), time.sleep(0.01)), torch.device("cpu"),
                                     warmup=2, repeats=3)
    assert len(calls) == 5 and len(timing.times_s) == 3
    assert all(0.009 < s < 1.0 for s in timing.times_s)
    with pytest.raises(ValueError, match="repeats"):
        benchmark.time_callable(lambda: None, torch.device("cpu"), warmup=0, repeats=0)


def _result(key: str, group: str, ips: float) -> Result:
    return Result(key=key, name=key, group=group, method=key, status="ok", timing=Timing.of([8 / ips]),
                  images_per_s=ips)


def test_ratios_and_targets_by_hand() -> None:
    results = [_result("inference", "baseline", 100.0), _result("gradcam", "fastcam", 90.0),
               _result("cfcam", "fastcam", 60.0), _result("torchcam-gradcam", "peer", 30.0),
               _result("released-cfcam", "peer", 12.0),
               Result(key="pgc-gradcam", name="pgc", group="peer", method="gradcam", status="skipped", reason="x")]
    r = benchmark.ratios(results)
    assert r["vs_inference"]["gradcam"] == pytest.approx(0.9)
    assert r["gradcam"] == pytest.approx({"torchcam-gradcam": 3.0, "released-cfcam": 7.5})
    assert r["cfcam"]["gradcam"] == pytest.approx(60 / 90) and r["cfcam"]["released-cfcam"] == pytest.approx(5.0)
    report = BenchReport(config=BenchConfig(model="resnet18", size=224, batch=8, device="cpu"),
                         environment={"device_name": "cpu", "versions": {"torch": "x"}, "torch_threads": 2,
                                      "date": "today"}, results=results, ratios=r)
    targets = {t["target"]: t for t in benchmark.check_targets(report)}
    loop = targets["CF-CAM >= 4x the released per-image loop (CPU)"]
    assert loop["ratio"] == pytest.approx(5.0) and loop["met"] is True and loop["setting_matches"] is True
    assert targets["CF-CAM >= 0.8x our Grad-CAM (CPU)"]["met"] is False
    md = benchmark.markdown_tables(report)
    assert "| pgc | skipped |" in md and "| cfcam | 2.00 | 5.00 |" in md and "| 1 | 90.00 | 0.90 |" in md


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_released_loop_matches_reference_cfcam() -> None:
    """The benchmark's baseline must compute what CFCAM(variant="reference") computes (else the speed-up
    would compare different work)."""
    if getattr(fastcam, "CFCAM", None) is None:
        pytest.skip("fastcam.CFCAM not built yet")
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=4, width=8).eval()
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with fastcam.CFCAM(model, "layer4", variant="reference", cluster_backend="sklearn") as cam:
        exp = cam.explain(images)
    loop = ReleasedCFCAMLoop(model, model.layer4)
    try:
        maps = np.stack([loop(images[i:i + 1], int(exp.targets[i])) for i in range(3)])
    finally:
        loop.close()
    assert all(p.grad is None for p in model.parameters())       # close() clears the full backward's .grad
    # the released code divides by the max without subtracting the min, as fastcam does
    np.testing.assert_allclose(maps, exp.maps.numpy(), atol=2e-5)


def test_max_time_caps_slow_contenders_at_one_timed_call() -> None:
    config = BenchConfig(model="tiny_resnet", size=32, batch=1, device="cpu", warmup=0, repeats=3,
                         contenders=("inference",), max_time=1e-9)
    report = benchmark.run_benchmark(config, progress=False)
    assert len(report.results[0].timing.times_s) == 1
    config.max_time = None
    assert len(benchmark.run_benchmark(config, progress=False).results[0].timing.times_s) == 3

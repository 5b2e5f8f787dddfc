"""`fastcam bench`: the CLI smoke run on a tiny model writes valid JSON and Markdown; bad input exits 2."""
from __future__ import annotations

import json

import pytest
import torch

from fastcam import benchmark
from fastcam.cli import main


def test_bench_cli_smoke_writes_valid_json(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    contenders = "inference,gradcam,softcam-inference,softcam,torchcam-gradcam,captum-gradcam,pgc-gradcam,released-cfcam"
    rc = main(["bench", "--model", "fastcam:tiny_resnet", "--size", "32", "--batch", "2", "--device", "cpu",
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
    assert "| Grad-CAM | fastcam GradCAM | torchcam GradCAM |" in printed and "released code" not in printed.split(
        "other implementation")[-1].split("| target")[0]  # no Grad-CAM ÷ CF-CAM cell


def test_bench_without_out_writes_nothing_into_the_current_folder(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    rc = main(["bench", "--model", "fastcam:tiny_resnet", "--size", "32", "--batch", "2", "--device", "cpu", "--repeats", "1",
               "--warmup", "0", "--contenders", "inference,gradcam", "--quiet"])
    assert rc == 0 and list(tmp_path.iterdir()) == []
    printed = capsys.readouterr().out
    assert "| fastcam GradCAM |" in printed and "no --out given" in printed


def test_bench_cli_bad_input() -> None:
    assert main(["bench", "--model", "no_such_model", "--device", "cpu", "--quiet"]) == 2
    assert main(["bench", "--model", "fastcam:tiny_resnet", "--device", "cpu", "--contenders", "fastgradcam", "--quiet"]) == 2
    assert main(["bench", "--model", "fastcam:tiny_resnet", "--device", "cpu", "--max-time", "0", "--quiet"]) == 2

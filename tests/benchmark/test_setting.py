"""The benchmark's setting is built by the one loader: any spec explain takes (issue 24 item 5)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastcam.benchmark import BenchConfig, make_setting
from fastcam.cli import main
from fastcam_testkit.hf import save_hf_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def _torchvision_imports() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - absent, or built for another torch
        return False
    return True


def test_bench_times_a_hugging_face_folder(tmp_path: Path) -> None:
    """A ModelOutput is unwrapped to its logits (a raw AttributeError before)."""
    folder = save_hf_folder(tmp_path / "resnet", "resnet")
    setting = make_setting(BenchConfig(model=f"hf:{folder}", size=40, batch=2, device="cpu",
                                       layer="resnet.encoder.stages.-1"))
    assert setting.targets.shape == (2,) and setting.num_classes == 3
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", f"hf:{folder}", "--layer", "resnet.encoder.stages.-1", "--size", "40",
                 "--batch", "2", "--device", "cpu", "--warmup", "0", "--repeats", "1", "--contenders",
                 "inference,gradcam,torchcam-gradcam", "--out", str(out), "--quiet"]) == 0
    results = {r["key"]: r for r in json.loads(out.read_text())["results"]}
    assert all(r["status"] == "ok" for r in results.values()), results
    # the peers take tensor outputs only: every contender times the model behind LogitsOnly alike
    assert setting.layer_name == "net.resnet.encoder.stages.1" and type(setting.model).__name__ == "LogitsOnly"


def test_bench_errors_are_clean_exits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vit = save_hf_folder(tmp_path / "vit", "vit")
    base = ["bench", "--device", "cpu", "--batch", "1", "--warmup", "0", "--repeats", "1", "--quiet",
            "--out", str(tmp_path / "b.json")]
    cases = [
        # a ViT built for 32x32 inputs, timed at 48x48
        ([*base, "--model", f"hf:{vit}", "--size", "48", "--layer", "vit.layers.-1.layernorm_before"],
         "failed on the benchmark batch (1, 3, 48, 48)"),
        ([*base, "--model", f"hf:{vit}", "--size", "32"], "cannot guess the target layer"),
        ([*base, "--model", f"hf:{tmp_path / 'missing'}"], "is not a local Hugging Face model folder"),
    ]
    if not _torchvision_imports():  # a bare name is torchvision's in every command
        cases.append(([*base, "--model", "resnet18"], "fastcam:resnet18"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err

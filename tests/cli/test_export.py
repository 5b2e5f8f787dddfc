"""`fastcam export`: a SoftCAM network from its weights file to a float16 ONNX file that ONNX Runtime runs
close to the explainer's numbers; Grad-CAM refusals come back as one clear line and exit status 2, nothing
written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

import fastcam
from fastcam.cli import main
from fastcam.models import tiny_resnet
from fastcam_testkit.common import gen


def test_export_softcam_from_weights_in_float16(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The SoftCAM path of the CLI (convert, then load the network's weights) and the float16 variant, which
    ONNX Runtime's CPU provider runs: float16 images in, float32 outputs close to the float32 explainer."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = fastcam.softcam.convert(tiny_resnet(num_classes=3), 3).eval()
    save_file(net.state_dict(), str(tmp_path / "softcam.safetensors"))
    out = tmp_path / "graphs" / "softcam.onnx"
    argv = ["export", "--method", "softcam", "--model", "fastcam:tiny_resnet", "--num-classes", "3", "--dtype", "float16",
            "--weights", str(tmp_path / "softcam.safetensors"), "--out", str(out), "--size", "48", "40"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"fastcam export: SoftCAM -> {out} (onnx, opset 20, float16); inputs images; "
                           "outputs logits, maps, lowres, evidence;"), said
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float16)"
    images = torch.randn(5, 3, 56, 64, generator=gen(0))
    logits, maps, lowres, evidence = session.run(None, {"images": images.half().numpy()})
    want = fastcam.SoftCAM(net).explain(images)
    assert logits.dtype == maps.dtype == np.float32
    assert np.array_equal(logits.argmax(1), want.targets.numpy())
    torch.testing.assert_close(torch.from_numpy(logits), want.logits, rtol=0, atol=2e-2 * float(want.logits.abs().max()))
    assert np.abs(maps - want.maps.numpy()).max() < 2e-2


@pytest.mark.parametrize("extra,message", [
    ([], "Grad-CAM needs a target layer"),
    (["--layer", "layer3"], "target layer 'layer3' is not the last feature map"),
    (["--layer", "layer4", "--dtype", "bfloat16"], "ONNX has no bfloat16 convolution"),
])
def test_export_refusals_are_one_line(tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture[str],
                                      extra: list[str], message: str) -> None:
    out = tmp_path / "never.onnx"
    argv = ["export", "--method", "gradcam", "--model", "fastcam:tiny_resnet", "--num-classes", "3", "--weights", str(weights),
            "--out", str(out), "--size", "32", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastcam export: error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_export_takes_hugging_face_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through torch.export where torch.fx cannot trace (a refusal naming fx before), or the construct
    that stops it (issue 24 item 5)."""
    from fastcam_testkit.hf import save_hf_folder

    resnet = save_hf_folder(tmp_path / "resnet", "resnet")
    out = tmp_path / "resnet.pt2"
    assert main(["export", "--model", f"hf:{resnet}", "--method", "gradcam", "--layer", "resnet.encoder.stages.-1",
                 "--format", "torch.export", "--out", str(out)]) == 0
    assert out.is_file() and "Grad-CAM -> " in capsys.readouterr().out
    loaded = torch.export.load(str(out)).module()
    logits, maps, _ = loaded(torch.randn(3, 3, 40, 40))  # the processor's size; batch dynamic
    assert logits.shape == (3, 3) and maps.shape == (3, 40, 40)
    convnext = save_hf_folder(tmp_path / "convnext", "convnext")
    assert main(["export", "--model", f"hf:{convnext}", "--method", "gradcam", "--layer", "convnext.encoder.stages.-1",
                 "--format", "torch.export", "--out", str(tmp_path / "c.pt2")]) == 2
    err = capsys.readouterr().err
    assert "LayerNorm 'convnext.layernorm'" in err and "Traceback" not in err and not (tmp_path / "c.pt2").exists()

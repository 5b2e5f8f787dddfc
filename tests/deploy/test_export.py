"""Exported graph files against the explainers they came from (the oracle): ONNX Runtime on the written
.onnx file, and the torch.export program loaded back from its .pt2 file.

One export per case serves every batch size and spatial size (the axes are dynamic). Float32 parity is
1e-5 (relative and absolute) for logits, maps, lowres and SoftCAM's evidence. (The float16 variant is
tested through `fastcam export --dtype float16`, tests/cli/test_export.py.)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

import fastcam
from fastcam.deploy import OPSET, ExportInfo, export
from fastcam.explanation import Explanation
from fastcam.models import tiny_resnet, tiny_vgg
from fastcam.softcam import convert
from fastcam_testkit.common import gen
from fastcam_testkit.heads import torchvision_densenet

TOL = {"rtol": 1e-5, "atol": 1e-5}
EXAMPLE = (3, 3, 64, 48)  # the batch traced; parity runs on other images, batches 1 and 5 and another size
SHAPES = ((1, 3, 64, 48), (5, 3, 64, 48), (2, 3, 80, 56))


def _softcam_resnet() -> fastcam.SoftCAM:
    return fastcam.SoftCAM(convert(tiny_resnet(3), 3).eval())


def _softcam_vgg() -> fastcam.SoftCAM:
    return fastcam.SoftCAM(convert(tiny_vgg(3), 3, vgg_hidden=16).eval())


def _gradcam_resnet() -> fastcam.GradCAM:
    return fastcam.GradCAM(tiny_resnet(3).eval(), "layer4")


def _gradcam_densenet() -> fastcam.GradCAM:
    """torchvision's DenseNet forward: F.relu(features, inplace=True) before the pooling."""
    return fastcam.GradCAM(torchvision_densenet(3).eval(), "features")


#: case -> (explainer, targets); the VGG case takes a `target` input (the others argmax in the graph)
CASES: dict[str, tuple[Callable[[], Any], str]] = {
    "softcam-resnet": (_softcam_resnet, "predicted"),
    "softcam-vgg": (_softcam_vgg, "given"),
    "gradcam-resnet": (_gradcam_resnet, "predicted"),
    "gradcam-densenet": (_gradcam_densenet, "predicted"),
}


@pytest.fixture(scope="module", params=list(CASES))
def onnx_export(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, ExportInfo]:
    build, targets = CASES[request.param]
    torch.manual_seed(0)
    explainer = build()
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    info = export(explainer, path, torch.randn(*EXAMPLE, generator=gen(0)), targets=targets)
    return explainer, info


def _oracle(explainer: Any, images: torch.Tensor, targets: torch.Tensor | None) -> dict[str, torch.Tensor]:
    want: Explanation = explainer.explain(images, targets)
    out = {"logits": want.logits, "maps": want.maps, "lowres": want.lowres}
    if isinstance(explainer, fastcam.SoftCAM):
        with torch.no_grad():
            out["evidence"] = explainer.net(images)[1]
    return out


def test_onnxruntime_matches_the_explainer(onnx_export: tuple[Any, ExportInfo]) -> None:
    explainer, info = onnx_export
    session = onnxruntime.InferenceSession(str(info.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(info.inputs)
    assert [o.name for o in session.get_outputs()] == list(info.outputs)
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    for seed, shape in enumerate(SHAPES, start=10):
        images = torch.randn(*shape, generator=gen(seed))
        feed = {"images": images.numpy()}
        targets = None
        if info.targets == "given":  # not the predicted classes: each image explains class b mod K
            targets = torch.arange(shape[0]) % 3
            feed["target"] = targets.numpy()
        got = dict(zip(info.outputs, session.run(None, feed)))
        want = _oracle(explainer, images, targets)
        assert set(got) == set(want)
        for name, value in want.items():
            assert got[name].dtype == np.float32
            torch.testing.assert_close(torch.from_numpy(got[name]), value, **TOL, msg=lambda m: f"{name} {shape}: {m}")
        assert got["maps"].shape == (shape[0], *shape[2:]) and 0 <= got["maps"].min() and got["maps"].max() <= 1


def test_onnx_file_records_what_it_is(onnx_export: tuple[Any, ExportInfo]) -> None:
    explainer, info = onnx_export
    model = onnx.load(str(info.path))
    onnx.checker.check_model(model)
    assert {o.domain: o.version for o in model.opset_import}[""] == OPSET
    record = json.loads({p.key: p.value for p in model.metadata_props}["fastcam"])
    assert record["method"] == explainer.name and record["targets"] == info.targets and record["dtype"] == "float32"
    assert record["checked_with"] == "onnxruntime" and max(record["max_error"].values()) <= 1e-5
    assert set(info.dynamic) == {"batch", "height", "width"}
    assert info.head == (() if explainer.name == "softcam" else tuple(record["head"]))


def test_torch_export_program_matches_the_explainer(tmp_path: Path, one_thread: None) -> None:
    torch.manual_seed(0)
    explainer = _gradcam_densenet()
    info = export(explainer, tmp_path / "gradcam.pt2", torch.randn(*EXAMPLE, generator=gen(0)), format="torch.export")
    assert info.opset is None and info.checked_with == "torch.export"
    extra = {"fastcam.json": ""}
    program = torch.export.load(str(info.path), extra_files=extra).module()
    assert json.loads(extra["fastcam.json"])["method"] == "gradcam"
    for seed, shape in enumerate(SHAPES, start=20):
        images = torch.randn(*shape, generator=gen(seed))
        logits, maps, lowres = program(images)
        want = _oracle(explainer, images, None)
        torch.testing.assert_close(logits, want["logits"], **TOL)
        torch.testing.assert_close(maps, want["maps"], **TOL)
        torch.testing.assert_close(lowres, want["lowres"], **TOL)

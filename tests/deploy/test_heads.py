"""The pooled-linear check (`fastcam.deploy.heads`) and the forward-only Grad-CAM graph against autograd.

The graph's weights are derived, not measured: W[t]/hw, times each channel's fraction of positive
activations behind a ReLU. The oracle is fastcam's autograd Grad-CAM (itself tested against captum and
torchcam): maps, lowres and logits must agree to 1e-5 on every accepted head, and every refused head must
be refused by name, before anything is exported.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import nn

import fastcam
from fastcam.deploy import NotPooledLinearError, PooledCAMGraph, export, pooled_linear_head
from fastcam.models import tiny_densenet, tiny_resnet, tiny_vgg
from fastcam_testkit.common import gen
from fastcam_testkit.heads import EfficientNetStyle, MeanViewHead, SkipHead, mlp_head_resnet, torchvision_densenet

TOL = {"rtol": 1e-5, "atol": 1e-5}

ACCEPTED: dict[str, tuple[Callable[[], nn.Module], str, tuple[str, ...]]] = {
    "resnet": (lambda: tiny_resnet(3), "layer4", ("global average pool", "flatten", "Linear 'fc'")),
    "densenet": (lambda: tiny_densenet(3), "features", ("ReLU", "global average pool", "flatten", "Linear 'classifier'")),
    "densenet-norm5": (lambda: tiny_densenet(3), "features.norm5",
                       ("ReLU", "global average pool", "flatten", "Linear 'classifier'")),
    "torchvision-densenet": (torchvision_densenet, "features",
                             ("ReLU", "global average pool", "flatten", "Linear 'classifier'")),
    "efficientnet": (EfficientNetStyle, "features",
                     ("global average pool", "flatten", "Dropout", "Linear 'classifier.1'")),
    "mean-view": (MeanViewHead, "body", ("global average pool", "flatten", "Linear 'fc'")),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
@pytest.mark.parametrize("given", [False, True])
def test_forward_only_gradcam_equals_autograd(case: str, given: bool, one_thread: None) -> None:
    """The derived weights reproduce autograd Grad-CAM exactly, ReLU heads included (DenseNet: the mask
    1[A > 0] of the ReLU's backward); given targets explain other classes than the predicted one."""
    build, layer, steps = ACCEPTED[case]
    torch.manual_seed(0)
    model = build().eval()
    images = torch.randn(5, 3, 48, 40, generator=gen(1))
    head = pooled_linear_head(model, layer, model.get_submodule(layer))
    assert head.steps == steps and head.relu == ("ReLU" in steps)
    graph = PooledCAMGraph(head, given_targets=given).eval()
    targets = torch.tensor([2, 0, 1, 1, 0]) if given else None
    want = fastcam.GradCAM(model, layer).explain(images, targets)
    with torch.no_grad():
        logits, maps, lowres = graph(images, targets) if given else graph(images)
    torch.testing.assert_close(logits, want.logits, **TOL)
    torch.testing.assert_close(lowres, want.lowres, **TOL)
    torch.testing.assert_close(maps, want.maps, **TOL)


def test_relu_mask_matters(one_thread: None) -> None:
    """Behind DenseNet's ReLU, plain CAM weights (W[t]/hw) are not Grad-CAM: the check is not vacuous."""
    torch.manual_seed(0)
    model = tiny_densenet(3).eval()
    head = pooled_linear_head(model, "features", model.features)
    plain = PooledCAMGraph(head, given_targets=False).eval()
    plain.relu = False
    images = torch.randn(3, 3, 48, 40, generator=gen(2))
    want = fastcam.GradCAM(model, "features").explain(images)
    with torch.no_grad():
        lowres = plain(images)[2]
    assert not torch.allclose(lowres, want.lowres, **TOL)


REFUSED: dict[str, tuple[Callable[[], nn.Module], str, str]] = {
    "mlp": (mlp_head_resnet, "layer4", "an MLP after pooling: Linear → activation → Linear is not linear"),
    "not-last-layer": (lambda: tiny_resnet(3), "layer3", "target layer 'layer3' is not the last feature map"),
    "conv-inside-last-block": (lambda: tiny_resnet(3), "layer4.0.conv2",
                               "target layer 'layer4.0.conv2' is not the last feature map: BatchNorm2d 'layer4.0.bn2'"),
    "vgg": (lambda: tiny_vgg(3), "features", "output_size=(7, 7), not a global average pool"),
    "skip": (SkipHead, "body", "target layer 'body' is not the last feature map: its output feeds 2 operations"),
    "densenet-block": (lambda: tiny_densenet(3), "features.denseblock2",
                       "is not the last feature map: BatchNorm2d 'features.norm5' runs after it"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_non_pooled_linear_heads_are_refused(case: str, tmp_path: Path) -> None:
    build, layer, message = REFUSED[case]
    torch.manual_seed(0)
    explainer = fastcam.GradCAM(build().eval(), layer)
    path = tmp_path / "never.onnx"
    with pytest.raises(NotPooledLinearError, match="Grad-CAM equals a forward-only CAM only for") as info:
        export(explainer, path, torch.randn(2, 3, 48, 40))
    assert message in str(info.value)
    assert isinstance(info.value, ValueError) and not path.exists()


def test_untraceable_model_is_refused() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.body(x)
            return self.fc(a.mean((2, 3))) if a.sum() > 0 else self.fc(a.amax((2, 3)))

    model = Branchy().eval()
    with pytest.raises(NotPooledLinearError, match="cannot trace Branchy with torch.fx"):
        pooled_linear_head(model, "body", model.body)
    with pytest.raises(NotPooledLinearError, match="torch.export cannot trace it either"):
        pooled_linear_head(model, "body", model.body, torch.randn(2, 3, 8, 8))


def test_hugging_face_heads_are_read_from_their_torch_export_graph(tmp_path: Path, one_thread: None) -> None:
    """fx cannot trace Hugging Face models (control flow on shapes, ModelOutput): their torch.export graph
    gives the same chain (issue 24 item 5)."""
    from fastcam.models import load_model
    from fastcam_testkit.hf import save_hf_folder

    resnet = load_model(f"hf:{save_hf_folder(tmp_path / 'resnet', 'resnet')}").model.eval()
    layer = "resnet.encoder.stages.1"
    images = torch.randn(3, 3, 40, 40, generator=gen(2))
    with pytest.raises(NotPooledLinearError, match="cannot trace ResNetForImageClassification with torch.fx"):
        pooled_linear_head(resnet, layer, resnet.get_submodule(layer))
    head = pooled_linear_head(resnet, layer, resnet.get_submodule(layer), images)
    assert head.steps == ("global average pool", "flatten", "Linear 'classifier.1'") and not head.relu
    want = fastcam.GradCAM(resnet, layer).explain(images)
    with torch.no_grad():
        logits, maps, lowres = PooledCAMGraph(head, given_targets=False).eval()(images[:2])  # another batch size
    torch.testing.assert_close(logits, want.logits[:2], **TOL)
    torch.testing.assert_close(lowres, want.lowres[:2], **TOL)
    torch.testing.assert_close(maps, want.maps[:2], **TOL)
    # a head that is not pooled-linear is refused by its ATen operation: tests/cli/test_export.py (ConvNeXt)


@pytest.mark.parametrize("method,reason", [
    ("GradCAMPlusPlus", "Grad-CAM\\+\\+ cannot be exported: its weights need the gradients"),
    ("ScoreCAM", "Score-CAM cannot be exported: it runs one forward per channel mask"),
    ("CFCAM", "CF-CAM cannot be exported: it needs the gradients and clusters"),
])
def test_methods_that_need_gradients_or_clustering_are_refused(method: str, reason: str, tmp_path: Path) -> None:
    explainer = getattr(fastcam, method)(tiny_resnet(3).eval(), "layer4")
    with pytest.raises(ValueError, match=reason):
        export(explainer, tmp_path / "x.onnx", torch.randn(2, 3, 32, 32))
    assert not (tmp_path / "x.onnx").exists()


def test_settings_that_cannot_be_served_are_refused(tmp_path: Path) -> None:
    images = torch.randn(2, 3, 32, 32)
    cases = [
        (fastcam.GradCAM(tiny_resnet(3), "layer4"), {}, "training mode"),
        (fastcam.GradCAM(tiny_resnet(3).eval(), ["layer3", "layer4"]), {}, "one target layer"),
        (fastcam.GradCAM(tiny_resnet(3).eval(), "layer4", gradient_noise=0.1), {}, "gradient_noise"),
        (fastcam.GradCAM(tiny_resnet(3).eval(), "layer4"), {"dtype": "bfloat16"}, "ONNX has no bfloat16 convolution"),
        (fastcam.GradCAM(tiny_resnet(3).eval(), "layer4"), {"format": "tflite"}, "format must be one of"),
        (fastcam.GradCAM(tiny_resnet(3).eval(), "layer4"), {"targets": 3}, "targets must be one of"),
    ]
    for explainer, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            export(explainer, tmp_path / "x.onnx", images, **kwargs)
    with pytest.raises(ValueError, match="2-D images"):
        export(fastcam.GradCAM(tiny_resnet(3).eval(), "layer4"), tmp_path / "x.onnx", torch.randn(1, 3, 4, 8, 8))
    assert not (tmp_path / "x.onnx").exists()


def test_numerical_check_refuses_a_wrong_graph(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The second guard: a head mis-read as ReLU-free (a wrong graph) fails the check against autograd and
    nothing is written."""
    import fastcam.deploy.exporter as export_module

    real = export_module.pooled_linear_head

    def without_relu(*args: object) -> object:
        head = real(*args)  # type: ignore[arg-type]
        return type(head)(trunk=head.trunk, linear=head.linear, relu=False, steps=head.steps)

    monkeypatch.setattr(export_module, "pooled_linear_head", without_relu)
    torch.manual_seed(0)
    path = tmp_path / "wrong.onnx"
    with pytest.raises(ValueError, match="graph differs from its reference on the example images: .*nothing was written"):
        export(fastcam.GradCAM(tiny_densenet(3).eval(), "features"), path, torch.randn(3, 3, 48, 40, generator=gen(3)))
    assert not path.exists()

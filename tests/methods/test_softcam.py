"""The SoftCAM explainer: maps by hand, targets, zero maps, no side effects, bad networks and input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastcam
from fastcam.softcam import SoftCAMNet, convert

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------- explainer
@pytest.fixture
def net(resnet: nn.Module) -> SoftCAMNet:
    torch.manual_seed(5)
    return convert(resnet, 5).eval()


def test_softcam_maps_match_hand_computation(net: SoftCAMNet, images: torch.Tensor) -> None:
    exp = fastcam.SoftCAM(net).explain(images, targets=[0, 1, 2, 4])
    with torch.no_grad():
        logits, evidence = net(images)
    idx = torch.tensor([0, 1, 2, 4])
    lowres = evidence[torch.arange(4), idx].double().clamp_min(0)
    up = F.interpolate(lowres[:, None], size=(64, 48), mode="bilinear", align_corners=False)[:, 0]
    peak = up.amax((1, 2), keepdim=True)
    expected = torch.where(peak > 0, up / peak.clamp_min(1e-300), 0.0)
    assert exp.maps.shape == (4, 64, 48) and exp.maps.dtype == torch.float32
    assert exp.lowres.shape == evidence.shape[:1] + evidence.shape[2:]
    torch.testing.assert_close(exp.lowres.double(), lowres, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(exp.maps.double(), expected, rtol=1e-5, atol=1e-6)
    assert float(exp.maps.min()) >= 0.0 and float(exp.maps.max()) == 1.0
    assert torch.equal(exp.maps.amax((1, 2)) == 1, peak.flatten() > 0)  # max 1 unless the map is all zero
    torch.testing.assert_close(exp.logits, logits)
    assert exp.targets.tolist() == [0, 1, 2, 4]


def test_softcam_targets(net: SoftCAMNet, images: torch.Tensor) -> None:
    cam = fastcam.SoftCAM(net)
    exp = cam.explain(images)
    assert torch.equal(exp.targets, exp.logits.argmax(1))
    assert cam.explain(images, 3).targets.tolist() == [3] * 4
    assert cam.explain(images, torch.tensor([4, 3, 2, 1])).targets.tolist() == [4, 3, 2, 1]
    torch.testing.assert_close(cam(images, 2), cam.explain(images, [2, 2, 2, 2]).maps)


def test_softcam_zero_map_stays_zero(net: SoftCAMNet, images: torch.Tensor) -> None:
    with torch.no_grad():  # class 1's evidence is -1 everywhere: its map must be all zero, not NaN
        net.head.conv.weight[1].zero_()
        net.head.conv.bias[1] = -1.0
    exp = fastcam.SoftCAM(net).explain(images, targets=1)
    assert torch.equal(exp.maps, torch.zeros_like(exp.maps)) and torch.equal(exp.lowres, torch.zeros_like(exp.lowres))


def test_softcam_no_grad_side_effects(net: SoftCAMNet, images: torch.Tensor) -> None:
    with torch.inference_mode():
        maps = fastcam.SoftCAM(net)(images)
    assert maps.shape == (4, 64, 48)
    assert all(p.grad is None for p in net.parameters()) and not net.training
    with fastcam.SoftCAM(net) as cam, torch.autocast("cpu", dtype=torch.bfloat16):
        amp = cam.explain(images)
    assert amp.maps.dtype == torch.float32 and amp.lowres.dtype == torch.float32
    assert float(amp.maps.min()) >= 0 and float(amp.maps.max()) <= 1
    with pytest.raises(RuntimeError, match="closed"):
        cam(images)


class _Returns(nn.Module):
    def __init__(self, make) -> None:  # noqa: ANN001
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.make = make

    def forward(self, x: torch.Tensor):  # noqa: ANN201
        return self.make(self.conv(x))


@pytest.mark.parametrize("make,error,match", [
    (lambda e: e.mean((2, 3)), TypeError, "pair"),
    (lambda e: (e.mean((2, 3)), e, e), TypeError, "pair"),
    (lambda e: (e.mean((2, 3)), e[:, :1]), ValueError, "evidence"),
    (lambda e: (e.mean((2, 3)), e.mean(2)), ValueError, "evidence"),
    (lambda e: (e.mean((2, 3))[:1], e), ValueError, "B = 4"),
    (lambda e: (e.mean((2, 3)), e[:, :, :0]), ValueError, "empty spatial"),
])
def test_softcam_rejects_bad_networks(images: torch.Tensor, make, error: type, match: str) -> None:  # noqa: ANN001
    with pytest.raises(error, match=match):
        fastcam.SoftCAM(_Returns(make))(images)


@pytest.mark.parametrize("bad,targets,error,match", [
    ("list", None, TypeError, "torch.Tensor"),
    ("3d", None, ValueError, "4-D"),
    ("channels", None, ValueError, "channels"),
    ("empty", None, ValueError, "empty"),
    ("nan", None, ValueError, "NaN"),
    (None, 5, ValueError, "out of range"),
    (None, [0, 1], ValueError, "2 targets"),
    (None, [0, 1, 2, 9], ValueError, "lie in"),
    (None, 1.5, TypeError, "targets"),
])
def test_softcam_bad_input(net: SoftCAMNet, images: torch.Tensor, bad, targets, error: type, match: str) -> None:  # noqa: ANN001
    inputs = {
        None: images, "list": images.tolist(), "3d": images[0], "channels": images[:, :2],
        "empty": images[:0], "nan": images.clone().index_fill_(0, torch.tensor([1]), float("nan")),
    }[bad]
    with pytest.raises(error, match=match):
        fastcam.SoftCAM(net)(inputs, targets)
    with pytest.raises(TypeError, match="nn.Module"):
        fastcam.SoftCAM(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend"):
        fastcam.SoftCAM(net, backend="cuda")

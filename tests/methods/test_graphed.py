"""`fastcam.graphed`: deferred host checks (CPU) and CUDA graph capture and replay (GPU only)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import fastcam
from fastcam._deferred import deferred_host_checks
from fastcam_testkit.sync import SyncCounter

pytestmark = pytest.mark.usefixtures("one_thread")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (run in bench/gpu_campaign.sh)")


@pytest.mark.parametrize("method", [fastcam.GradCAM, fastcam.GradCAMPlusPlus, fastcam.CFCAM])
def test_deferred_checks_make_no_host_read_and_keep_the_flags(method, resnet: nn.Module, images: torch.Tensor) -> None:
    cam = method(resnet, "layer4", backend="torch")
    expected = cam(images)
    with SyncCounter() as syncs, deferred_host_checks() as flags:
        got = cam(images)
    assert syncs.total == 0, syncs.sites  # capturable: nothing read back to the host
    assert flags and all(bool(f.all()) for f in flags)
    torch.testing.assert_close(got, expected)


def test_a_deferred_check_that_fails_is_a_false_flag_not_an_error(resnet: nn.Module, images: torch.Tensor) -> None:
    bad = images.clone()
    bad[1, 0, 0, 0] = float("nan")
    with deferred_host_checks() as flags:
        fastcam.GradCAM(resnet, "layer4")(bad)  # no NonFiniteError inside: it is read after the replay
    assert not all(bool(f.all()) for f in flags)
    with pytest.raises(fastcam.NonFiniteError):
        fastcam.GradCAM(resnet, "layer4")(bad)  # outside, the check raises as always


def test_graphed_on_cpu_warns_and_explains_eagerly(resnet: nn.Module, images: torch.Tensor) -> None:
    cam = fastcam.GradCAM(resnet, "layer4")
    with pytest.warns(RuntimeWarning, match="CUDA graphs need CUDA tensors"):
        graph = fastcam.graphed(cam, images)
    assert not graph.captured
    torch.testing.assert_close(graph(images), cam(images))
    with pytest.raises(ValueError, match="targets fixed at capture"):
        graph(images, 1)
    with pytest.raises(TypeError, match="fastcam explainer"):
        fastcam.graphed(lambda x: x, images)


@CUDA
@pytest.mark.parametrize("method", [fastcam.GradCAM, fastcam.GradCAMPlusPlus, fastcam.CFCAM])
def test_graph_replays_equal_eager_calls(method, resnet: nn.Module, images: torch.Tensor) -> None:
    model, x = resnet.cuda(), images.cuda()
    cam = method(model, "layer4")
    graph = fastcam.graphed(cam, x)
    assert graph.captured
    for shift in (0.0, 0.5):
        batch = x + shift
        torch.testing.assert_close(graph(batch), cam(batch), rtol=1e-4, atol=1e-5)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(fastcam.NonFiniteError):  # a failed deferred check: the batch is redone eagerly
        graph(bad)
    with pytest.raises(ValueError, match="captured for images"):
        graph(x[:2])


@CUDA
def test_score_cam_cannot_be_captured_and_says_so(resnet: nn.Module, images: torch.Tensor) -> None:
    model, x = resnet.cuda(), images.cuda()
    with pytest.warns(RuntimeWarning, match="cannot be captured"):
        graph = fastcam.graphed(fastcam.ScoreCAM(model, "layer4", batch_size=64), x)
    assert not graph.captured
    torch.testing.assert_close(graph(x), fastcam.ScoreCAM(model, "layer4", batch_size=64)(x))

"""Host syncs and aten ops per call, counted on CPU (each host read is a CUDA stream stall on a GPU).

Grad-CAM-like methods make exactly one sync per call (the combined NaN/Inf check); everything from the
gradients to the maps stays on the device. The op counts are what the call adds beyond a plain forward.
"""
from __future__ import annotations

from collections import Counter

import pytest
import torch

import fastcam
from fastcam import softcam
from fastcam.methods import registry
from fastcam.models import tiny_resnet
from fastcam_testkit.sync import OpCounter, SyncCounter

pytestmark = pytest.mark.usefixtures("one_thread")

#: method -> (max host syncs per call, max aten ops beyond the forward, views included) at batch 4, 64x48
#: images; measured at 1 sync and 59 / 70 ops when set, 62 / 73 since the dead-gradient flag (a gradient
#: exactly zero at the layer for the whole batch is refused) travels in the same sync (any, stack, cat),
#: 70 / 81 since the channel weights and the maps are checked too (issue 26: NaN weights from finite inputs)
BUDGETS = {
    "gradcam": (1, 71),
    "gradcampp": (1, 82),
}


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_resnet(num_classes=5).eval()


def _extra_ops(model: torch.nn.Module, images: torch.Tensor, ops: Counter) -> Counter:
    """The ops of a call minus those of a plain forward (no_grad)."""
    with torch.no_grad(), OpCounter() as forward:
        model(images)
    return ops - forward.counts


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_gradient_methods_sync_once(name: str, model: torch.nn.Module, images: torch.Tensor) -> None:
    cam = registry.method_class(name)(model, "layer4", backend="torch")
    cam(images)  # warm-up: lazy imports and caches
    with SyncCounter() as syncs:
        cam(images)
    with OpCounter() as counter:
        cam(images)
    ops = counter.counts
    max_syncs, max_ops = BUDGETS[name]
    extra = _extra_ops(model, images, ops)
    assert syncs.total <= max_syncs, f"{name}: {syncs.total} syncs: {syncs.sites}"
    assert sum(extra.values()) <= max_ops, f"{name}: {sum(extra.values())} ops beyond the forward: {extra.most_common()}"


def test_softcam_syncs_once(model: torch.nn.Module, images: torch.Tensor) -> None:
    net = softcam.convert(model, 3).eval()
    cam = fastcam.SoftCAM(net, backend="torch")
    cam(images)
    with SyncCounter() as syncs:
        cam(images)
    with OpCounter() as counter:
        cam(images)
    ops = counter.counts
    extra = _extra_ops(net, images, ops)
    assert syncs.total <= 1, syncs.sites
    assert sum(extra.values()) <= 40, extra.most_common()


def test_the_counter_sees_syncs() -> None:
    """The harness itself: each kind of host read is counted (a counter that cannot fail proves nothing)."""
    x = torch.arange(6.0)
    with SyncCounter() as syncs:
        x.sum().item()
        bool(x.any())
        x[x > 2]
        torch.nonzero(x)
        x.tolist()
    assert syncs.total == 5, syncs.sites


def test_cfcam_at_resnet18_shapes() -> None:
    """CF-CAM at ResNet-18 layer4, 224 px, batch 4 (384 remaining channels × 49 positions per image), the
    clustering on its fixed-shape torch path: one host read more than Grad-CAM (the clustering's flags).
    The issue's budget of 300 ops beyond the forward is not met: the exact radix quantile selection and
    the ε-graph's exact re-checks take ~780 of the ~940 (`bench/NOTES.md`); CUDA graphs (`fastcam.graphed`)
    remove their launch cost on a GPU. This bounds them so they cannot grow unnoticed."""
    from fastcam.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    images = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    cam = fastcam.CFCAM(model, "layer4", backend="torch", cluster_backend="torch")
    cam(images)
    with SyncCounter() as syncs:
        cam(images)
    with OpCounter() as counter:
        cam(images)
    extra = _extra_ops(model, images, counter.counts)
    assert syncs.total <= 2, syncs.sites
    assert sum(extra.values()) <= 1000, extra.most_common(20)

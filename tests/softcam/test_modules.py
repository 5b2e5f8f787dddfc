"""The evidence head's structure and its dispatch to the fused Triton kernel (or a clear error)."""
from __future__ import annotations

import copy
import sys
import types

import pytest
import torch
from torch import nn

import fastcam
from fastcam import softcam
from fastcam._backend import KERNEL_MODULES
from fastcam.models import tiny_resnet
from fastcam.softcam import EvidenceHead, convert, pool_evidence

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------- dispatch
HEAD_KERNEL_MODULE = "fastcam.kernels." + KERNEL_MODULES["evidence_head"]


def test_head_dispatches_to_the_fused_kernel(monkeypatch: pytest.MonkeyPatch, images: torch.Tensor) -> None:
    """backend="triton" hands (features, W (K, C), b, pool, T) to kernels.softcam_head.evidence_head and
    the maps step to .softcam_maps; "auto" on CPU stays on torch. A recording stand-in checks the
    contract whether or not the real kernel is installed."""
    calls: list[tuple] = []

    def evidence_head(features, weight, bias, pool, temperature):  # noqa: ANN001, ANN202
        calls.append(("head", tuple(features.shape), tuple(weight.shape), tuple(bias.shape), pool, temperature))
        evidence = torch.einsum("bchw,kc->bkhw", features, weight) + bias[:, None, None]
        return pool_evidence(evidence, pool, temperature), evidence

    def softcam_maps(evidence, targets, size, *, check_targets=True):  # noqa: ANN001, ANN202
        calls.append(("maps", tuple(evidence.shape), tuple(size), check_targets))
        from fastcam.ops import softcam_maps as reference

        return reference(evidence, targets, size, check_targets=check_targets)

    fake = types.ModuleType(HEAD_KERNEL_MODULE)
    fake.evidence_head, fake.softcam_maps = evidence_head, softcam_maps  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, HEAD_KERNEL_MODULE, fake)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    torch.manual_seed(0)
    model = tiny_resnet().eval()
    triton_net = convert(model, 3, pool="lse", temperature=0.5, backend="triton").eval()
    torch_net = convert(model, 3, pool="lse", temperature=0.5, backend="torch").eval()
    torch_net.load_state_dict(triton_net.state_dict())
    with torch.no_grad():
        fused, reference = triton_net(images), torch_net(images)
    assert calls == [("head", (4, 64, 2, 2), (3, 64), (3,), "lse", 0.5)]
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)
    maps = fastcam.SoftCAM(torch_net, backend="triton")(images)
    assert calls[-1] == ("maps", (4, 3, 2, 2), (64, 48), False)
    torch.testing.assert_close(maps, fastcam.SoftCAM(torch_net, backend="torch")(images))
    calls.clear()
    auto = convert(model, 3, backend="auto").eval()
    with torch.no_grad():
        auto(images)
    fastcam.SoftCAM(auto, backend="auto")(images)
    assert calls == []  # CPU tensors: auto means torch


def test_explicit_triton_without_the_kernel_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, images: torch.Tensor) -> None:
    monkeypatch.setitem(sys.modules, HEAD_KERNEL_MODULE, None)  # import now raises ModuleNotFoundError
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    net = convert(tiny_resnet().eval(), 2, backend="triton")
    with pytest.raises((RuntimeError, ImportError), match="softcam_head"):
        net(images)


def test_head_module_structure() -> None:
    head = EvidenceHead(6, 3, pool="lse", temperature=2.0)
    assert isinstance(head.conv, nn.Conv2d) and head.conv.kernel_size == (1, 1) and head.conv.bias is not None
    assert "temperature=2.0" in repr(head)
    with pytest.raises(ValueError, match="4-D"):
        head(torch.zeros(2, 6))


def test_fit_trains_through_the_real_fused_head(images: torch.Tensor) -> None:
    """`fit` with the real Triton head (interpreter on CPU) takes the same SGD steps as the torch path,
    ElasticNet included. (Forward, gradient and maps parity of the kernel: tests/test_kernels_softcam.py.)"""
    pytest.importorskip("triton")
    pytest.importorskip(HEAD_KERNEL_MODULE)
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=2, width=4).eval()
    fused = convert(model, 3, pool="lse", temperature=0.7, backend="triton").eval()
    reference = convert(model, 3, pool="lse", temperature=0.7, backend="torch").eval()
    reference.load_state_dict(fused.state_dict())
    start = copy.deepcopy(reference.state_dict())
    loader = [(images, torch.tensor([0, 1, 2, 1]))] * 2
    for net in (fused, reference):
        softcam.fit(net, loader, epochs=1, lr=0.05, l1=1e-3, l2=1e-2, eta_min=1e-3, progress=False)
    for (name, a), b in zip(fused.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(fused.head.conv.weight, start["head.conv.weight"])  # it did train

"""The compiled kernels on a CUDA GPU (bench/gpu_campaign.sh runs these): each against its `fastcam.ops`
reference on odd sizes, half and float32 inputs, strided layouts, split and unsplit grids, with NaN-poisoned
output buffers; and every method with backend="triton" against backend="torch" at fp32, bf16 and fp16.

The other modules of tests/kernels run the same kernels in Triton's interpreter on CPU tensors (where they
check far more edge cases); they skip on a GPU machine, where the interpreter is off.

Tolerances: the combine and filter kernels accumulate in float32 like the references (1e-5 relative);
the SoftCAM head's `tl.dot` uses TF32 on the GPU when PyTorch's convolutions do (cuDNN's allow_tf32,
PyTorch's default), so the head is compared with the reference computed under the same policy, and the
maps from it to 1e-3.
"""
from __future__ import annotations

import pytest
import torch

import fastcam
from fastcam import ops
from fastcam.methods import registry
from fastcam.models import tiny_resnet

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_campaign.sh)")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _close(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    assert torch.isfinite(actual).all(), "non-finite values (an element left unwritten?)"
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual.float(), expected.float(), rtol=rtol, atol=rtol * max(scale, 1e-30))


def _poisoned(*shape: int) -> torch.Tensor:
    return torch.full(shape, float("nan"), device="cuda")


@pytest.mark.parametrize("batch", [1, 3, 64])  # 1 and 3 take the split grid on an H100, 64 may not
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_combine(batch: int, dtype: torch.dtype, layout: str) -> None:
    from fastcam.kernels.cam_combine import combine

    g = torch.Generator(device="cuda").manual_seed(batch)
    channels, h, w, size = 2047, 7, 5, (33, 29)
    base = torch.randn(batch, 2 * channels, h + 1, w + 2, device="cuda", generator=g).relu_().to(dtype)
    acts = base[:, :channels, :h, :w] if layout == "sliced" else base[:, :channels, :h, :w].contiguous()
    if layout == "channels_last":
        acts = acts.contiguous(memory_format=torch.channels_last)
    weights = torch.randn(batch, channels, device="cuda", generator=g) / channels
    lowres, maps = combine(acts, weights, size, lowres_out=_poisoned(batch, h, w), maps_out=_poisoned(batch, *size))
    ref_lowres, ref_maps = ops.combine(acts, weights, size)
    _close(lowres, ref_lowres, 1e-5)
    _close(maps, ref_maps, 1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_upsample_normalize(dtype: torch.dtype) -> None:
    from fastcam.kernels.upsample_normalize import upsample_normalize

    lowres = torch.rand(5, 9, 11, device="cuda").to(dtype)
    lowres[2] = 0  # an all-zero map stays zero
    out = upsample_normalize(lowres.transpose(1, 2), (37, 31), out=_poisoned(5, 37, 31))
    _close(out, ops.upsample_normalize(lowres.transpose(1, 2), (37, 31)), 1e-5)
    assert (out[2] == 0).all()


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cluster_filter_weights(variant: str, batch: int, dtype: torch.dtype) -> None:
    from fastcam.kernels.cfcam_filter import cluster_filter_weights

    g = torch.Generator(device="cuda").manual_seed(7)
    channels, h, w = 517, 7, 7
    grad = (torch.randn(batch, channels, 1, 1, device="cuda", generator=g)
            + 0.05 * torch.randn(batch, channels, h, w, device="cuda", generator=g)).to(dtype)
    labels = torch.randint(-2, 9, (batch, channels), device="cuda", generator=g)
    got = cluster_filter_weights(grad, labels, variant=variant, out=_poisoned(batch, channels))
    _close(got, ops.cluster_filter_weights(grad, labels, variant=variant), 1e-5)


@pytest.mark.parametrize("pool", ["avg", "max", "lse"])
@pytest.mark.parametrize("classes,batch", [(2, 1), (5, 8), (1000, 8)])
def test_evidence_head_and_maps(pool: str, classes: int, batch: int) -> None:
    from fastcam.kernels.softcam_head import evidence_head, softcam_maps

    g = torch.Generator(device="cuda").manual_seed(classes)
    features = torch.randn(batch, 2048, 7, 7, device="cuda", generator=g).relu_().requires_grad_(True)
    weight = (torch.randn(classes, 2048, device="cuda", generator=g) / 45).requires_grad_(True)
    bias = torch.randn(classes, device="cuda", generator=g).requires_grad_(True)
    logits, evidence = evidence_head(features, weight, bias, pool, 0.7)
    ref_logits, ref_evidence = ops.evidence_head(features, weight, bias, pool, 0.7)
    tf32 = torch.backends.cudnn.allow_tf32
    _close(logits, ref_logits, 1e-2 if tf32 else 1e-5)
    _close(evidence, ref_evidence, 1e-2 if tf32 else 1e-5)
    probe = torch.randn_like(logits)
    grads = torch.autograd.grad((logits * probe).sum() + evidence.square().mean(), (features, weight, bias))
    ref_grads = torch.autograd.grad((ref_logits * probe).sum() + ref_evidence.square().mean(), (features, weight, bias))
    for got, ref in zip(grads, ref_grads):
        _close(got, ref, 1e-2 if tf32 else 1e-4)
    targets = logits.argmax(1)
    lowres, maps = softcam_maps(evidence.detach(), targets, (224, 224))
    ref_lowres, ref_maps = ops.softcam_maps(evidence.detach(), targets, (224, 224))
    _close(lowres, ref_lowres, 1e-5)
    _close(maps, ref_maps, 1e-5)


@pytest.mark.parametrize("name", registry.method_names(post_hoc=True, slow=False))
@pytest.mark.parametrize("amp", [None, torch.bfloat16, torch.float16])
def test_every_method_triton_equals_torch(name: str, amp: torch.dtype | None) -> None:
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=5).cuda().eval()
    images = torch.randn(3, 3, 61, 47, device="cuda")
    cls = registry.method_class(name)
    kwargs = {"batch_size": 64} if "batch_size" in cls.__init__.__code__.co_varnames else {}
    results = []
    for backend in ("torch", "triton"):
        with torch.autocast("cuda", dtype=amp, enabled=amp is not None):
            results.append(cls(model, "layer4", backend=backend, **kwargs).explain(images, [0, 3, 1]))
    torch_exp, triton_exp = results
    rtol = 1e-4 if amp is None else 2e-2  # half forwards: the same ops in another order can differ in the last bits
    _close(triton_exp.lowres, torch_exp.lowres, rtol)
    _close(triton_exp.maps, torch_exp.maps, rtol)


def test_softcam_explainer_triton_equals_torch() -> None:
    torch.manual_seed(0)
    net = fastcam.softcam.convert(tiny_resnet(num_classes=5), 4, backend="torch").cuda().eval()
    images = torch.randn(3, 3, 61, 47, device="cuda")
    _close(fastcam.SoftCAM(net, backend="triton")(images), fastcam.SoftCAM(net, backend="torch")(images), 1e-5)

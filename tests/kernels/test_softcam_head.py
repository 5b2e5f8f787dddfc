"""The fused SoftCAM head (kernels/softcam_head.py) against its torch reference, under Triton's interpreter
on CPU (tests/conftest.py sets TRITON_INTERPRET=1) or on a GPU when there is one.

Every comparison uses fresh random inputs with odd, non-power-of-two sizes and NaN-poisoned output buffers,
so a kernel that leaves any element unwritten fails.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

import fastcam
from fastcam import softcam
from fastcam.models import tiny_resnet

pytest.importorskip("triton")
from fastcam_testkit.kernels import force_split  # noqa: E402

from fastcam.kernels import softcam_head as sh  # noqa: E402
from fastcam.ops import evidence_head as evidence_head_reference  # noqa: E402
from fastcam.ops import softcam_maps as softcam_maps_reference  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
POOLS = ("avg", "max", "lse")
B, C, H, W = 3, 37, 5, 7


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kernel output starts as NaN: anything the kernels leave unwritten shows up."""

    def nan_output(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return torch.full(shape, float("nan"), device=device, dtype=torch.float32)

    monkeypatch.setattr(sh, "_new_output", nan_output)


@pytest.fixture(autouse=True)
def exact_float32_on_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU compare exact float32 on both sides (no TF32 in the kernel nor in cuDNN's reference)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def head_inputs(K: int, seed: int, dtype: torch.dtype = torch.float32, shape: tuple[int, ...] = (B, C, H, W)):
    g = generator(seed)
    features = torch.randn(*shape, generator=g).to(DEVICE, dtype)
    weight = (torch.randn(K, shape[1], generator=g) / math.sqrt(shape[1])).to(DEVICE)
    bias = torch.randn(K, generator=g).to(DEVICE)
    return features, weight, bias


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    """Relative agreement, scaled by the reference's magnitude (no NaN anywhere)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert torch.isfinite(actual).all(), "kernel output has NaN/Inf (an unwritten element?)"
    scale = expected.detach().abs().max().clamp_min(1.0)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * float(scale))


# ------------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("K", [3, 19])
@pytest.mark.parametrize("pool", POOLS)
def test_forward_matches_reference(pool: str, K: int) -> None:
    features, weight, bias = head_inputs(K, seed=10 + K)
    logits, evidence = sh.evidence_head(features, weight, bias, pool, 0.7)
    ref_logits, ref_evidence = evidence_head_reference(features, weight, bias, pool, 0.7)
    assert logits.shape == (B, K) and evidence.shape == (B, K, H, W)
    assert_close(evidence, ref_evidence, 1e-5)
    assert_close(logits, ref_logits, 1e-5)
    # the pooled logits really are the pooling of the returned evidence
    assert_close(logits, softcam.pool_evidence(evidence, pool, 0.7), 1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pool", POOLS)
def test_forward_half_precision_features(pool: str, dtype: torch.dtype) -> None:
    features, weight, bias = head_inputs(19, seed=20, dtype=dtype)
    logits, evidence = sh.evidence_head(features, weight.to(dtype), bias.to(dtype), pool, 1.3)
    assert logits.dtype == evidence.dtype == torch.float32
    # reference in float32 from the same rounded values: only the summation order differs
    ref_logits, ref_evidence = evidence_head_reference(features, weight.to(dtype), bias.to(dtype), pool, 1.3)
    assert_close(evidence, ref_evidence, 1e-4)
    assert_close(logits, ref_logits, 1e-4)
    # and close to the float32 head on the unrounded weights, at the dtype's precision
    loose = {torch.float16: 5e-3, torch.bfloat16: 4e-2}[dtype]
    ref32_logits, _ = evidence_head_reference(features, weight, bias, pool, 1.3)
    assert_close(logits, ref32_logits, loose)


@pytest.mark.parametrize(
    "layout",
    ["channels_last", "channel_slice", "transposed_hw", "width_slice", "one_row"],
)
def test_forward_strided_features(layout: str) -> None:
    g = generator(30)
    base = torch.randn(B, 2 * C, H + 2, W + 3, generator=g).to(DEVICE)
    features = {
        "channels_last": base[:, :C, :H, :W].contiguous().to(memory_format=torch.channels_last),
        "channel_slice": base[:, ::2, :H, :W],  # flattenable pixels, channel stride 2·h·w
        "transposed_hw": base[:, :C, :W, :H].transpose(2, 3),  # pixels do not flatten: (i, j) addressing
        "width_slice": base[:, 1 : C + 1, 1 : H + 1, 2 : W + 2],
        "one_row": base[:, :C, 3:4, :],
    }[layout]
    assert not features.is_contiguous()
    weight = torch.randn(19, C, generator=g).to(DEVICE)
    bias = torch.randn(19, generator=g).to(DEVICE)
    for pool in POOLS:
        logits, evidence = sh.evidence_head(features, weight, bias, pool, 0.9)
        ref_logits, ref_evidence = evidence_head_reference(features.contiguous(), weight, bias, pool, 0.9)
        assert_close(evidence, ref_evidence, 1e-5)
        assert_close(logits, ref_logits, 1e-5)


def test_forward_several_pixel_and_channel_tiles() -> None:
    """h·w = 323 and C = 133 exceed one tile (256 pixels, 128 channels in the interpreter; less on a GPU):
    the C loop accumulates, and the pooling statistics carry across pixel tiles (lse rescales its sum)."""
    features, weight, bias = head_inputs(3, seed=35, shape=(2, 133, 17, 19))
    for pool, temperature in [("avg", 1.0), ("max", 1.0), ("lse", 0.3), ("lse", 1e3)]:
        logits, evidence = sh.evidence_head(features, weight, bias, pool, temperature)
        ref_logits, ref_evidence = evidence_head_reference(features, weight, bias, pool, temperature)
        assert_close(evidence, ref_evidence, 1e-5)
        assert_close(logits, ref_logits, 1e-5)
    # the test is only meaningful if some maxima lie beyond the first pixel tile
    assert (ref_evidence.flatten(2).argmax(dim=2) >= 256).any()


# ------------------------------------------------------------------------------------------- split forward
@pytest.mark.parametrize("K,pool,layout", [(3, "avg", "nchw"), (19, "max", "channels_last"), (70, "lse", "nchw")])
def test_split_forward_matches_reference(K: int, pool: str, layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The channel reduction cut into slices of 13 channels (37 = 13 + 13 + 11), NaN workspace and outputs:
    the partial launch writes every slice of every class block (K = 70: two blocks in the interpreter), the
    reduce launch adds them in slice order, adds the bias and pools; twice the same bits."""
    chosen = force_split(monkeypatch, 13)
    features, weight, bias = head_inputs(K, seed=90 + K)
    if layout == "channels_last":
        features = features.contiguous(memory_format=torch.channels_last)
    logits, evidence = sh.evidence_head(features, weight, bias, pool, 0.7)
    assert chosen == [(3, 13)]
    ref_logits, ref_evidence = evidence_head_reference(features, weight, bias, pool, 0.7)
    assert_close(evidence, ref_evidence, 1e-5)
    assert_close(logits, ref_logits, 1e-5)
    assert_close(logits, softcam.pool_evidence(evidence, pool, 0.7), 1e-5)
    again_logits, again_evidence = sh.evidence_head(features, weight, bias, pool, 0.7)
    assert torch.equal(again_logits, logits) and torch.equal(again_evidence, evidence)


def test_split_forward_several_pixel_tiles_no_bias_and_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    """Split (133 = 45 + 45 + 43 channels) with h·w = 323 > one pixel tile: the reduce launch carries the
    pooling statistics across tiles (lse rescales); no bias; gradients through the split forward."""
    force_split(monkeypatch, 45)
    features, weight, _ = head_inputs(3, seed=35, shape=(2, 133, 17, 19))
    for pool, temperature in [("max", 1.0), ("lse", 0.3)]:
        logits, evidence = sh.evidence_head(features, weight, None, pool, temperature)
        ref_logits, ref_evidence = evidence_head_reference(features, weight, None, pool, temperature)
        assert_close(evidence, ref_evidence, 1e-5)
        assert_close(logits, ref_logits, 1e-5)
    assert (ref_evidence.flatten(2).argmax(dim=2) >= 256).any()
    features, weight, bias = head_inputs(5, seed=96)
    probe = torch.randn(B, 5, generator=generator(97)).to(DEVICE)
    fused = head_grads(sh.evidence_head, features, weight, bias, "lse", 0.8, probe)
    reference = head_grads(evidence_head_reference, features, weight, bias, "lse", 0.8, probe)
    for got, want in zip(fused, reference):
        assert_close(got, want, 1e-5)


def test_head_plan_fills_the_gpu() -> None:
    """Grids at ResNet layer4 shapes on 132 SMs (GPU block shapes): few classes split to >= 2x SMs; K = 1000
    only as far as the partial evidence stays <= half the feature bytes (8 slices of 256 channels)."""
    from fastcam.kernels._launch import plan_as_gpu

    with plan_as_gpu():
        grids = {(c, k, n): sh.plan(torch.empty(n, c, 7, 7), k).grid
                 for c in (2048, 512) for k in (2, 1000) for n in (1, 8, 64)}
    assert grids == {
        (2048, 2, 1): (1, 64), (2048, 2, 8): (8, 32), (2048, 2, 64): (64, 5),
        (2048, 1000, 1): (8, 8), (2048, 1000, 8): (64, 5), (2048, 1000, 64): (512,),
        (512, 2, 1): (1, 16), (512, 2, 8): (8, 16), (512, 2, 64): (64, 4),
        (512, 1000, 1): (8, 2), (512, 1000, 8): (64, 2), (512, 1000, 64): (512,),
    }


def test_forward_conv_weight_no_bias_and_single_pixel() -> None:
    features, weight, _ = head_inputs(5, seed=40, shape=(2, 21, 1, 1))
    for pool in POOLS:
        logits, evidence = sh.evidence_head(features, weight[:, :, None, None], None, pool, 2.0)
        ref_logits, ref_evidence = evidence_head_reference(features, weight, None, pool, 2.0)
        assert_close(evidence, ref_evidence, 1e-5)
        assert_close(logits, ref_logits, 1e-5)


@pytest.mark.parametrize("temperature", [1e-2, 1e2, 1e5])
def test_lse_accurate_for_small_and_large_temperatures(temperature: float) -> None:
    """Against float64 on the kernel's own evidence: at large T every exp((E - m)/T) is ~1 and a plain
    sum of exps would lose ~T·eps absolutely; the kernel's expm1/log1p form keeps float32 accuracy."""
    features, weight, bias = head_inputs(19, seed=45)
    logits, evidence = sh.evidence_head(features, weight, bias, "lse", temperature)
    e64 = evidence.double().flatten(2)
    peak = e64.amax(dim=2, keepdim=True)
    exact = peak.squeeze(2) + temperature * torch.log(torch.exp((e64 - peak) / temperature).mean(dim=2))
    assert_close(logits.double(), exact, 1e-5)


def test_float64_features_take_the_float64_torch_path() -> None:
    features, weight, bias = head_inputs(5, seed=46)
    features = features.double().requires_grad_(True)
    logits, evidence = sh.evidence_head(features, weight, bias, "lse", 0.7)
    assert logits.dtype == evidence.dtype == torch.float64
    exact = softcam.pool_evidence(torch.nn.functional.conv2d(features, weight.double()[:, :, None, None], bias.double()), "lse", 0.7)
    torch.testing.assert_close(logits, exact, rtol=1e-12, atol=1e-12)
    logits.sum().backward()
    assert features.grad is not None and features.grad.dtype == torch.float64


@pytest.mark.parametrize("pool", POOLS)
def test_nan_features_propagate_like_torch(pool: str) -> None:
    """A NaN pixel makes that image's logits NaN, as with torch (a GPU's fmax would silently skip it)."""
    features, weight, bias = head_inputs(3, seed=47)
    features[1, 4, 2, 3] = float("nan")
    logits, evidence = sh.evidence_head(features, weight, bias, pool, 0.8)
    ref_logits, _ = evidence_head_reference(features, weight, bias, pool, 0.8)
    assert torch.equal(logits.isnan(), ref_logits.isnan()) and logits[1].isnan().all()
    assert torch.isfinite(logits[[0, 2]]).all() and evidence[1, :, 2, 3].isnan().all()


def test_lse_is_stable_for_large_evidence_and_between_avg_and_max() -> None:
    features, weight, bias = head_inputs(7, seed=50)
    features = features * 300.0  # E/T reaches ~1e3: a naive exp would overflow to inf
    lse, evidence = sh.evidence_head(features, weight, bias, "lse", 0.5)
    ref, _ = evidence_head_reference(features, weight, bias, "lse", 0.5)
    assert_close(lse, ref, 1e-5)
    avg = evidence.mean(dim=(2, 3))
    peak = evidence.amax(dim=(2, 3))
    assert (lse >= avg - 1e-3).all() and (lse <= peak + 1e-3).all()


# ------------------------------------------------------------------------------------------- backward
def loss_with_elastic_net(logits: torch.Tensor, evidence: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
    """A cross-entropy-like term on the logits plus the paper's ElasticNet on the evidence."""
    return (logits * probe).sum() + softcam.elastic_net(evidence, l1=0.3, l2=0.7)


def head_grads(head, features, weight, bias, pool, temperature, probe):
    leaves = [t.detach().clone().requires_grad_(True) for t in (features, weight, bias)]
    logits, evidence = head(*leaves, pool, temperature)
    loss_with_elastic_net(logits, evidence, probe).backward()
    return [t.grad for t in leaves]


@pytest.mark.parametrize("K", [3, 19])
@pytest.mark.parametrize("pool", POOLS)
def test_backward_matches_autograd_of_reference(pool: str, K: int) -> None:
    features, weight, bias = head_inputs(K, seed=60 + K)
    probe = torch.randn(B, K, generator=generator(61)).to(DEVICE)
    fused = head_grads(sh.evidence_head, features, weight, bias, pool, 0.8, probe)
    reference = head_grads(evidence_head_reference, features, weight, bias, pool, 0.8, probe)
    for name, got, want in zip(("features", "weight", "bias"), fused, reference):
        assert got.dtype == want.dtype, name
        assert_close(got, want, 1e-5)


def test_backward_channels_last_half_features() -> None:
    features, weight, bias = head_inputs(5, seed=70)
    probe = torch.randn(B, 5, generator=generator(71)).to(DEVICE)
    cl = features.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    got = head_grads(sh.evidence_head, cl, weight, bias, "lse", 1.1, probe)
    want = head_grads(evidence_head_reference, cl, weight, bias, "lse", 1.1, probe)
    assert got[0].dtype == torch.bfloat16
    assert_close(got[0].float(), want[0].float(), 1e-2)  # rounded to bfloat16 on both sides
    assert_close(got[1], want[1], 1e-5)
    assert_close(got[2], want[2], 1e-5)


def test_backward_max_pool_ties_share_the_gradient() -> None:
    """Pixels whose features are all zero have E = bias: with W A < 0 elsewhere they tie for the max."""
    g = generator(80)
    features = -torch.rand(2, 11, 3, 5, generator=g)
    features[:, :, 0, 1] = 0.0
    features[:, :, 2, 3] = 0.0
    features[1, :, 1, 4] = 0.0  # three tied maxima in image 1
    weight = torch.rand(4, 11, generator=g) + 0.1
    bias = torch.randn(4, generator=g)
    probe = torch.randn(2, 4, generator=g)
    features, weight, bias, probe = (t.to(DEVICE) for t in (features, weight, bias, probe))
    fused = head_grads(sh.evidence_head, features, weight, bias, "max", 1.0, probe)
    reference = head_grads(evidence_head_reference, features, weight, bias, "max", 1.0, probe)
    for got, want in zip(fused, reference):
        assert_close(got, want, 1e-5)


def test_backward_from_evidence_only() -> None:
    features, weight, bias = head_inputs(3, seed=90)
    leaves = [t.clone().requires_grad_(True) for t in (features, weight, bias)]
    _, evidence = sh.evidence_head(*leaves, "avg")
    (evidence.square().sum() + evidence[:, :, 1:, ::2].sum()).backward()  # a strided evidence gradient
    ref_leaves = [t.clone().requires_grad_(True) for t in (features, weight, bias)]
    _, ref_evidence = evidence_head_reference(*ref_leaves, "avg")
    (ref_evidence.square().sum() + ref_evidence[:, :, 1:, ::2].sum()).backward()
    for got, want in zip(leaves, ref_leaves):
        assert_close(got.grad, want.grad, 1e-5)


# ------------------------------------------------------------------------------------------- maps
@pytest.mark.parametrize("size", [(23, 31), (5, 7)])
def test_softcam_maps_match_reference(size: tuple[int, int]) -> None:
    g = generator(100)
    evidence = torch.randn(4, 19, H, W, generator=g).to(DEVICE)
    evidence[2] = -evidence[2].abs()  # image 2's target map is all negative: ReLU -> all-zero map stays zero
    targets = torch.tensor([0, 18, 7, 7]).to(DEVICE)
    lowres, maps = sh.softcam_maps(evidence, targets, size)
    ref_lowres, ref_maps = softcam_maps_reference(evidence, targets, size)
    assert_close(lowres, ref_lowres, 1e-6)
    assert_close(maps, ref_maps, 1e-5)
    assert (maps[2] == 0).all() and maps[[0, 1, 3]].amax(dim=(1, 2)).eq(1).all()


def test_softcam_maps_strided_half_evidence() -> None:
    g = generator(110)
    evidence = torch.randn(3, 6, W, H, generator=g).to(DEVICE, torch.float16).transpose(2, 3)
    targets = torch.tensor([5, 0, 2]).to(DEVICE)
    lowres, maps = sh.softcam_maps(evidence, targets, (17, 13))
    ref_lowres, ref_maps = softcam_maps_reference(evidence, targets, (17, 13))
    assert_close(lowres, ref_lowres, 1e-6)
    assert_close(maps, ref_maps, 1e-5)


# ------------------------------------------------------------------------------------------- end to end
def test_converted_network_triton_equals_torch_and_trains_alike() -> None:
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=5).to(DEVICE).eval()
    torch.manual_seed(1)
    net_torch = softcam.convert(model, 3, pool="lse", temperature=0.6, backend="torch")
    torch.manual_seed(1)
    net_triton = softcam.convert(model, 3, pool="lse", temperature=0.6, backend="triton")
    images = torch.randn(2, 3, 37, 45, generator=generator(120)).to(DEVICE)

    with torch.no_grad():
        logits_t, evidence_t = net_torch(images)
        logits_k, evidence_k = net_triton(images)
    assert_close(evidence_k, evidence_t, 1e-5)
    assert_close(logits_k, logits_t, 1e-5)

    maps_t = fastcam.SoftCAM(net_torch, backend="torch").explain(images, targets=[2, 0])
    maps_k = fastcam.SoftCAM(net_triton, backend="triton").explain(images, targets=[2, 0])
    assert_close(maps_k.lowres, maps_t.lowres, 1e-5)
    assert_close(maps_k.maps, maps_t.maps, 1e-5)

    # one training step's gradients (cross-entropy + ElasticNet) through the fused head and the backbone
    labels = torch.tensor([1, 2], device=DEVICE)
    grads = []
    for net in (net_torch, copy.deepcopy(net_triton)):
        net.train()
        logits, evidence = net(images)
        loss = torch.nn.functional.cross_entropy(logits, labels) + softcam.elastic_net(evidence, 1e-3, 4e-2)
        params = [p for p in net.parameters() if p.requires_grad]
        grads.append(torch.autograd.grad(loss, params))
    for got, want in zip(grads[1], grads[0]):
        assert_close(got, want, 1e-4)


def test_converted_network_under_autocast() -> None:
    """Under bfloat16 autocast the backbone hands the head bfloat16 features: the fused head reads them as
    they are (float32 weights and accumulation), torch's head runs its conv in bfloat16; both agree to
    bfloat16 precision, and the backward runs through both."""
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=5).to(DEVICE).eval()
    torch.manual_seed(3)
    net_torch = softcam.convert(model, 4, pool="lse", backend="torch")
    torch.manual_seed(3)
    net_triton = softcam.convert(model, 4, pool="lse", backend="triton")
    images = torch.randn(2, 3, 37, 45, generator=generator(125)).to(DEVICE)
    results = []
    for net in (net_torch, net_triton):
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            logits, evidence = net(images)
        loss = logits.float().logsumexp(dim=1).sum() + softcam.elastic_net(evidence, 0.0, 1e-2)
        grad = torch.autograd.grad(loss, net.head.conv.weight)[0]
        results.append((logits.float(), evidence.float(), grad))
    (logits_t, evidence_t, grad_t), (logits_k, evidence_k, grad_k) = results
    assert evidence_k.dtype == torch.float32
    assert_close(evidence_k, evidence_t, 3e-2)
    assert_close(logits_k, logits_t, 3e-2)
    assert_close(grad_k, grad_t, 5e-2)


def test_fit_trains_through_the_fused_head_like_torch() -> None:
    """`fastcam.softcam.fit` (SGD + Nesterov, ElasticNet) for two steps: same weights with either backend."""
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=5).to(DEVICE).eval()
    nets = []
    for backend in ("torch", "triton"):
        torch.manual_seed(2)
        nets.append(softcam.convert(model, 2, pool="avg", backend=backend))
    g = generator(130)
    loader = [(torch.randn(2, 3, 33, 41, generator=g).to(DEVICE), torch.tensor([0, 1], device=DEVICE)) for _ in range(2)]
    for net in nets:  # identical batches, so BatchNorm's batch statistics agree too
        history = softcam.fit(net, loader, epochs=1, l1=1e-3, l2=4e-2, progress=False)
        assert math.isfinite(history["train_loss"][0])
    for got, want in zip(nets[1].state_dict().values(), nets[0].state_dict().values()):
        if got.is_floating_point():
            assert_close(got, want, 1e-4)
    # and training moved the head (the comparison is not between two untouched copies)
    torch.manual_seed(2)
    untouched = softcam.convert(model, 2, pool="avg", backend="torch")
    assert not torch.allclose(untouched.head.conv.weight, nets[1].head.conv.weight)


# ------------------------------------------------------------------------------------------- bad input
def test_bad_input_raises() -> None:
    features, weight, bias = head_inputs(3, seed=130)
    with pytest.raises(ValueError, match="pool"):
        sh.evidence_head(features, weight, bias, "median")
    with pytest.raises(ValueError, match="temperature"):
        sh.evidence_head(features, weight, bias, "lse", 0.0)
    with pytest.raises(ValueError, match="temperature"):
        sh.evidence_head(features, weight, bias, "avg", float("inf"))
    with pytest.raises(TypeError, match="temperature"):
        sh.evidence_head(features, weight, bias, "lse", "1.0")
    with pytest.raises(ValueError, match="weight"):
        sh.evidence_head(features, weight[:, :-1], bias)
    with pytest.raises(ValueError, match="bias"):
        sh.evidence_head(features, weight, bias[:-1])
    with pytest.raises(ValueError, match="4-D"):
        sh.evidence_head(features[0], weight, bias)
    with pytest.raises(TypeError, match="float32, float16, bfloat16 or float64"):
        sh.evidence_head(features.to(torch.int32), weight, bias)
    with pytest.raises(ValueError, match="non-empty"):
        sh.evidence_head(features[:0], weight, bias)
    evidence = torch.randn(2, 3, 4, 5).to(DEVICE)
    with pytest.raises(ValueError, match="targets must lie"):
        sh.softcam_maps(evidence, torch.tensor([0, 3]).to(DEVICE), (8, 10))
    with pytest.raises(ValueError, match="targets"):
        sh.softcam_maps(evidence, torch.tensor([0]).to(DEVICE), (8, 10))
    with pytest.raises(TypeError, match="integer"):
        sh.softcam_maps(evidence, torch.tensor([0.0, 1.0]).to(DEVICE), (8, 10))
    with pytest.raises((TypeError, ValueError), match="size"):
        sh.softcam_maps(evidence, torch.tensor([0, 1]).to(DEVICE), (8, 0))

"""SoftCAM: conversion keeps the backbone bit-identical, logits are the pooled evidence, ElasticNet by
hand, fine-tuning lowers the loss and round-trips its checkpoints, the explainer's map contract."""
from __future__ import annotations

import copy
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastcam
from fastcam import softcam
from fastcam.models import tiny_resnet, tiny_vgg
from fastcam.softcam import EvidenceHead, SoftCAMNet, convert, elastic_net, pool_evidence


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # noqa: ANN202
    """Tiny CPU models run ~10x slower with 2 intra-op threads on a shared 2-core runner (thread
    contention); one thread keeps this file fast. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _capture(module: nn.Module, run) -> torch.Tensor:  # noqa: ANN001
    """The output of `module` during `run()`, cloned before any later in-place op can touch it."""
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        run()
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0]


# ------------------------------------------------------------------------------------------- pooling
def _pool_float64(evidence: torch.Tensor, pool: str, temperature: float) -> torch.Tensor:
    """Independent float64 oracle, straight from the definitions (no max-shift)."""
    e = evidence.double().flatten(2)
    if pool == "avg":
        return e.sum(2) / e.shape[2]
    if pool == "max":
        return e.max(2).values
    return temperature * torch.log(torch.exp(e / temperature).mean(2))


@pytest.mark.parametrize("pool,temperature", [("avg", 1.0), ("max", 1.0), ("lse", 1.0), ("lse", 0.37), ("lse", 5.0)])
def test_logits_equal_pooled_evidence(resnet: nn.Module, images: torch.Tensor, pool: str, temperature: float) -> None:
    torch.manual_seed(3)
    net = convert(resnet, 7, pool=pool, temperature=temperature).eval()
    with torch.no_grad():
        logits, evidence = net(images)
    assert logits.shape == (4, 7) and evidence.shape[:2] == (4, 7)
    expected = _pool_float64(evidence, pool, temperature)
    torch.testing.assert_close(logits.double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(logits, pool_evidence(evidence, pool, temperature), rtol=0, atol=0)


def test_lse_limits_and_stability() -> None:
    evidence = torch.randn(3, 4, 5, 7, generator=_gen(0), dtype=torch.float64)
    avg, mx = evidence.mean((2, 3)), evidence.amax((2, 3))
    lse = {t: pool_evidence(evidence, "lse", t) for t in (1e-4, 1.0, 1e4)}
    # avg <= lse_T <= max for every T (Jensen / log-mean-exp <= max)
    for value in lse.values():
        assert bool((value >= avg - 1e-12).all() and (value <= mx + 1e-12).all())
    # T -> inf: lse - avg ≈ Var/(2T) -> 0; T -> 0: max - lse <= T·log(hw) -> 0
    assert (lse[1e4] - avg).abs().max() < 1e-3
    assert (mx - lse[1e-4]).abs().max() <= 1e-4 * math.log(35) + 1e-12
    # huge evidence: exp would overflow without the max shift
    big = torch.full((1, 2, 3, 3), 1e4)
    big[0, 0, 1, 1] = 2e4
    out = pool_evidence(big, "lse", 1.0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.tensor([[2e4 - math.log(9), 1e4]]))


@pytest.mark.parametrize("temperature", [1e-3, 1.0, 1e3, 1e6])
def test_lse_float32_accurate_at_any_temperature(temperature: float) -> None:
    """float32 lse against the float64 definition: T·(logsumexp(E/T) - log hw) would be off by ~T·1e-7."""
    evidence = torch.randn(3, 4, 7, 9, generator=_gen(2))
    exact = evidence.double().flatten(2)
    peak = exact.amax(2)
    exact = peak + temperature * torch.log(torch.exp((exact - peak[..., None]) / temperature).mean(2))
    torch.testing.assert_close(pool_evidence(evidence, "lse", temperature).double(), exact, rtol=0, atol=2e-6)


def test_lse_bf16_is_computed_in_float32() -> None:
    evidence = torch.randn(2, 3, 4, 4, generator=_gen(1)).bfloat16()
    out = pool_evidence(evidence, "lse", 0.5)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), _pool_float64(evidence.float(), "lse", 0.5), rtol=8e-3, atol=8e-3)


@pytest.mark.parametrize("pool,temperature,error", [
    ("mean", 1.0, ValueError), ("avg", 0.0, ValueError), ("lse", -1.0, ValueError),
    ("lse", float("nan"), ValueError), ("lse", "1", TypeError),
])
def test_bad_pool_arguments(resnet: nn.Module, pool: str, temperature: object, error: type) -> None:
    with pytest.raises(error):
        convert(resnet, 2, pool=pool, temperature=temperature)
    with pytest.raises(error):
        pool_evidence(torch.zeros(1, 2, 3, 3), pool, temperature)


# ------------------------------------------------------------------------------------------- conversion
def test_convert_resnet_backbone_bit_identical_and_fc_equivalence(resnet: nn.Module, images: torch.Tensor) -> None:
    net = convert(resnet, 5).eval()
    original = _capture(resnet.layer4, lambda: resnet(images))
    with torch.no_grad():
        inside = _capture(net.backbone, lambda: net(images))
    assert torch.equal(original, inside)
    assert [n for n, _ in net.backbone.named_children()] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    assert net.head.conv.in_channels == resnet.fc.in_features and net.head.conv.bias is not None
    # with the fc weights in the 1×1 conv, average pooling of the evidence gives the original logits
    # (linearity: mean_ij(W F_ij + b) = W mean_ij(F_ij) + b)
    with torch.no_grad():
        net.head.conv.weight.copy_(resnet.fc.weight[:, :, None, None])
        net.head.conv.bias.copy_(resnet.fc.bias)
        torch.testing.assert_close(net(images)[0], resnet(images), rtol=1e-5, atol=1e-5)


def test_convert_copies_and_leaves_the_model_alone(resnet: nn.Module) -> None:
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    net = convert(resnet, 2)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in resnet.state_dict().items())
    assert net.training is False and not any(m.training for m in net.modules())  # the model's eval mode


def test_convert_keeps_train_mode_and_frozen_bn(resnet: nn.Module) -> None:
    resnet.train()
    resnet.bn1.eval()  # a frozen BatchNorm inside a training model keeps its flag
    net = convert(resnet, 2)
    assert net.training and net.head.training and net.backbone.layer1.training
    assert not net.backbone.bn1.training


def test_convert_vgg_backbone_bit_identical(vgg: nn.Module, images: torch.Tensor) -> None:
    net = convert(vgg, 3, vgg_hidden=24).eval()
    original = _capture(vgg.features, lambda: vgg(images))
    with torch.no_grad():
        inside = _capture(net.backbone.features, lambda: net(images))
    assert torch.equal(original, inside)
    neck = net.backbone.neck
    assert [type(m) for m in neck] == [nn.Conv2d, nn.ReLU, nn.Dropout, nn.Conv2d, nn.ReLU, nn.Dropout]
    assert (neck[0].in_channels, neck[0].out_channels, neck[3].out_channels) == (32, 24, 24)
    assert net.head.conv.in_channels == 24 and net.head.conv.out_channels == 3
    assert neck[2].p == 0.5


def test_convert_vgg_default_neck_is_4096(vgg: nn.Module) -> None:
    net = convert(vgg, 2)
    assert net.backbone.neck[0].out_channels == 4096 and net.backbone.neck[3].weight.shape[:2] == (4096, 4096)
    assert net.head.conv.weight.shape == (2, 4096, 1, 1)


def test_convert_densenet_keeps_final_relu(densenet: nn.Module, images: torch.Tensor) -> None:
    net = convert(densenet, 4).eval()
    pre_relu = _capture(densenet.features, lambda: densenet(images))
    with torch.no_grad():
        inside = _capture(net.backbone, lambda: net(images))
    assert torch.equal(torch.relu(pre_relu), inside)
    assert (pre_relu < 0).any()  # the ReLU matters here: without it the test above could not fail
    # with the classifier's weights in the 1×1 conv the logits equal the original's: the ReLU sits
    # where torchvision's forward applies it
    same_head = convert(densenet, 5).eval()
    with torch.no_grad():
        same_head.head.conv.weight.copy_(densenet.classifier.weight[:, :, None, None])
        same_head.head.conv.bias.copy_(densenet.classifier.bias)
        torch.testing.assert_close(same_head(images)[0], densenet(images), rtol=1e-5, atol=1e-5)


def test_convert_custom_backbone(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2), nn.ReLU(), nn.Conv2d(6, 10, 3, stride=2)).eval()
    net = convert(None, 3, backbone=backbone, in_channels=10, pool="max").eval()
    with torch.no_grad():
        inside = _capture(net.backbone, lambda: net(images))
        assert torch.equal(backbone(images), inside)
        logits, evidence = net(images)
    assert net.backbone is not backbone
    assert evidence.shape == (4, 3, 15, 11)
    torch.testing.assert_close(logits, evidence.amax((2, 3)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="in_channels"):
        convert(None, 3, backbone=backbone)
    with pytest.raises(ValueError, match="not both"):
        convert(tiny_resnet(), 3, backbone=backbone, in_channels=10)
    wrong = convert(None, 3, backbone=backbone, in_channels=7)
    with pytest.raises(ValueError, match="expects 7 feature channels"):
        wrong(images)


def test_convert_follows_dtype(resnet: nn.Module, images: torch.Tensor) -> None:
    net = convert(resnet.double(), 2)
    assert all(p.dtype == torch.float64 for p in net.parameters())
    assert net(images.double())[1].dtype == torch.float64


@pytest.mark.parametrize("model,num_classes,error,match", [
    (nn.Sequential(nn.Conv2d(3, 4, 3)), 2, TypeError, "cannot convert Sequential"),
    ("resnet", 2, TypeError, "nn.Module"),
    (None, 2, TypeError, "backbone="),
    (tiny_resnet(), 0, ValueError, "num_classes"),
    (tiny_resnet(), 2.0, TypeError, "num_classes"),
])
def test_convert_rejects_unsupported(model: object, num_classes: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        convert(model, num_classes)  # type: ignore[arg-type]


def test_convert_resnet_with_replaced_fc(resnet: nn.Module, images: torch.Tensor) -> None:
    resnet.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(resnet.fc.in_features, 2))  # a common fine-tuning head
    net = convert(resnet, 3).eval()
    assert net.head.conv.in_channels == 64
    assert torch.equal(_capture(resnet.layer4, lambda: resnet(images)), net.backbone(images).detach())


def test_convert_rejects_resnet_named_model_with_another_layout() -> None:
    class ResNet(nn.Module):  # a timm-like ResNet: same class name, another layout
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

    with pytest.raises(TypeError, match="torchvision's ResNet layout"):
        convert(ResNet(), 2)


# ------------------------------------------------------------------------------------------- ElasticNet
def test_elastic_net_by_hand() -> None:
    # image 0: values 1, -2, 2, 0 (class 0) and 4 (class 1) -> L1 = 9, L2 = sqrt(1+4+4+16) = 5
    # image 1: one 3 and zeros -> L1 = 3, L2 = 3
    evidence = torch.zeros(2, 2, 2, 2)
    evidence[0, 0] = torch.tensor([[1.0, -2.0], [2.0, 0.0]])
    evidence[0, 1, 0, 0] = 4.0
    evidence[1, 1, 1, 0] = -3.0
    l1, l2 = 0.1, 0.5
    per_image = [l1 * 9 + l2 * 5, l1 * 3 + l2 * 3]
    assert elastic_net(evidence, l1, l2).item() == pytest.approx(sum(per_image) / 2, rel=1e-6)
    assert elastic_net(evidence, l1, l2, first_only=True).item() == pytest.approx(per_image[0], rel=1e-6)
    assert elastic_net(evidence, 0.0, 0.0).item() == 0.0
    # the released code's torch.norm(activations[0], p) on the first image agrees
    released = l1 * torch.norm(evidence[0], 1) + l2 * torch.norm(evidence[0], 2)
    assert elastic_net(evidence, l1, l2, first_only=True).item() == pytest.approx(released.item(), rel=1e-6)


def test_elastic_net_gradient_at_zero_is_finite() -> None:
    evidence = torch.zeros(2, 3, 4, 4, requires_grad=True)
    elastic_net(evidence, 0.0, 1.0).backward()
    assert torch.isfinite(evidence.grad).all()


@pytest.mark.parametrize("evidence,l1,l2,error", [
    (torch.zeros(2, 3, 4), 0.0, 1.0, ValueError), (torch.zeros(0, 1, 2, 2), 0.0, 1.0, ValueError),
    (torch.zeros(1, 1, 2, 2), -1.0, 1.0, ValueError), (torch.zeros(1, 1, 2, 2), 0.0, float("inf"), ValueError),
    (torch.zeros(1, 1, 2, 2), None, 1.0, TypeError),
])
def test_elastic_net_bad_input(evidence: torch.Tensor, l1: object, l2: object, error: type) -> None:
    with pytest.raises(error):
        elastic_net(evidence, l1, l2)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- fit
def _toy_loader(seed: int, n: int = 48, batch: int = 12) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Class = which half (left/right) of a 16×16 image holds a bright blob."""
    g = _gen(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = 0.3 * torch.randn(n, 3, 16, 16, generator=g)
    for i, label in enumerate(labels.tolist()):
        x0 = 2 if label == 0 else 10
        images[i, :, 5:11, x0:x0 + 4] += 2.0
    return [(images[i:i + batch], labels[i:i + batch]) for i in range(0, n, batch)]


def test_fit_lowers_the_loss_and_round_trips_checkpoints(tmp_path) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    net = convert(tiny_resnet(num_classes=2, width=4), 2).eval()
    train, val = _toy_loader(0, n=32, batch=16), _toy_loader(1, n=16, batch=16)
    history = softcam.fit(net, train, epochs=5, lr=0.05, l1=1e-4, l2=1e-3, eta_min=1e-3,
                          checkpoint_dir=tmp_path, val_loader=val, progress=False)
    assert history["epoch"] == [1, 2, 3, 4, 5]
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]
    assert all(p > 0 for p in history["train_penalty"])
    assert history["train_loss"][0] == pytest.approx(history["train_ce"][0] + history["train_penalty"][0], rel=1e-6)
    # clipped cosine: starts at lr, decreases, never below eta_min
    assert history["lr"][0] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(history["lr"], history["lr"][1:])) and min(history["lr"]) >= 1e-3
    assert net.training is False  # the mode it was found in
    assert (tmp_path / "last.safetensors").is_file() and (tmp_path / "best.safetensors").is_file()
    assert (tmp_path / "history.json").is_file()

    fresh = convert(tiny_resnet(num_classes=2, width=4), 2).eval()
    images = train[0][0]
    assert not torch.equal(fresh(images)[1], net(images)[1])
    softcam.load(fresh, tmp_path / "last.safetensors")
    with torch.no_grad():
        for a, b in zip(fresh(images), net(images)):
            assert torch.equal(a, b)
    for (name, a), (_, b) in zip(fresh.state_dict().items(), net.state_dict().items()):
        assert torch.equal(a, b), name


def test_save_load_round_trip_and_strictness(tmp_path) -> None:  # noqa: ANN001
    net = convert(tiny_vgg(), 3, vgg_hidden=8)
    path = softcam.save(net, tmp_path / "sub" / "w.safetensors")
    other = convert(tiny_vgg(), 3, vgg_hidden=8)
    softcam.load(other, path)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
    with pytest.raises(RuntimeError):
        softcam.load(convert(tiny_vgg(), 4, vgg_hidden=8), path)
    with pytest.raises(FileNotFoundError):
        softcam.load(net, tmp_path / "missing.safetensors")


def test_fit_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    net = convert(tiny_resnet(num_classes=2, width=4), 2)
    history = softcam.fit(net, _toy_loader(0, n=32, batch=16), epochs=2, lr=0.05, eta_min=1e-3, amp="bf16", progress=False)
    assert all(math.isfinite(v) for v in history["train_loss"]) and history["train_loss"][1] < history["train_loss"][0]
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_fit_bad_input() -> None:
    net = convert(tiny_resnet(num_classes=2, width=4), 2)
    loader = _toy_loader(0, n=12)
    with pytest.raises(ValueError, match="epochs"):
        softcam.fit(net, loader, epochs=0, progress=False)
    with pytest.raises(ValueError, match="eta_min"):
        softcam.fit(net, loader, epochs=1, lr=1e-5, progress=False)
    with pytest.raises(ValueError, match="amp"):
        softcam.fit(net, loader, epochs=1, amp="int8", progress=False)
    with pytest.raises(TypeError, match="pair"):
        softcam.fit(net, [loader[0][0]], epochs=1, progress=False)
    with pytest.raises(TypeError, match="labels"):
        softcam.fit(net, [(loader[0][0], loader[0][1].float())], epochs=1, progress=False)
    with pytest.raises(TypeError, match="pair \\(logits"):
        softcam.fit(tiny_resnet(num_classes=2), loader, epochs=1, progress=False)


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


# ------------------------------------------------------------------------------------------- dispatch
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
        from fastcam.methods.softcam import evidence_maps as reference

        return reference(evidence, targets, size)

    fake = types.ModuleType(softcam.HEAD_KERNEL_MODULE)
    fake.evidence_head, fake.softcam_maps = evidence_head, softcam_maps  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, softcam.HEAD_KERNEL_MODULE, fake)
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
    monkeypatch.setitem(sys.modules, softcam.HEAD_KERNEL_MODULE, None)  # import now raises ModuleNotFoundError
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
    pytest.importorskip(softcam.HEAD_KERNEL_MODULE)
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

"""The call contract every post-hoc method shares, and bad input."""
import gc
import weakref

import pytest
import torch
from torch import nn

import fastcam
from fastcam.methods import registry
from fastcam.models import tiny_resnet

pytestmark = pytest.mark.usefixtures("one_thread")

#: every post-hoc method of the registry: weights from gradients, maps from gradients (element-wise, eigen),
#: clustered gradients, masked forwards, ablations through the layers after the target, principal components
METHODS = [registry.method_class(name) for name in registry.method_names(post_hoc=True, slow=False)]
#: Score-CAM's many-sample variants (the registry's slow methods): the checks that do not multiply their forwards
SAMPLING = [registry.method_class(name) for name in registry.method_names(post_hoc=True, slow=True)]
GRADIENT = [m for m in METHODS if m.uses_gradients]


def _make(method, model, layer="layer4", **kw):
    if method in (fastcam.ScoreCAM, fastcam.AblationCAM, *SAMPLING):
        kw.setdefault("batch_size", 64)
    if method in SAMPLING:
        kw.setdefault("num_samples", 1)
    if method is fastcam.SSCAM:
        kw.setdefault("generator", 0)
    return method(model, layer, **kw)


@pytest.mark.parametrize("method", METHODS + SAMPLING)
def test_contract_shapes_range_device(method, resnet, images, device):
    model, x = resnet.to(device), images.to(device)
    with _make(method, model) as cam:
        exp = cam.explain(x)
        maps = cam(x)
    assert maps.shape == (4, 64, 48) and maps.dtype == torch.float32 and maps.device == x.device
    assert exp.lowres.shape == (4, 2, 2) and exp.logits.shape == (4, 5) and exp.targets.shape == (4,)
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    torch.testing.assert_close(exp.targets, exp.logits.argmax(1))
    torch.testing.assert_close(maps, exp.maps)


@pytest.mark.parametrize("method", METHODS)
def test_target_forms_agree(method, resnet, images):
    cam = _make(method, resnet)
    as_int = cam(images, 2)
    torch.testing.assert_close(cam(images, [2, 2, 2, 2]), as_int)
    torch.testing.assert_close(cam(images, torch.tensor([2, 2, 2, 2])), as_int)
    torch.testing.assert_close(cam(images, torch.tensor(2)), as_int)
    mixed = cam.explain(images, [0, 1, 2, 3])
    assert mixed.targets.tolist() == [0, 1, 2, 3]
    if method is fastcam.EigenCAM:  # no gradient, no score: the map does not depend on the target
        torch.testing.assert_close(mixed.maps, as_int)
    else:
        assert not torch.allclose(mixed.maps, as_int)  # the targets are really used


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_single_images(method, resnet, images):
    cam = _make(method, resnet)
    batch = cam.explain(images, [0, 1, 2, 3]).lowres
    singles = torch.cat([cam.explain(images[i : i + 1], [i]).lowres for i in range(4)])
    torch.testing.assert_close(batch, singles, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_no_parameter_grad_and_state_preserved(method, images):
    model = tiny_resnet(num_classes=5).train()
    model.layer1.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    _make(method, model, allow_train_mode=True)(images)  # training mode is refused unless asked for
    assert all(p.grad is None for p in model.parameters())
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    model.eval()
    _make(method, model)(images)
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("method", METHODS)
def test_frozen_model_no_grad_and_inference_mode(method, resnet, images):
    reference = _make(method, resnet)(images)
    resnet.requires_grad_(False)
    frozen = _make(method, resnet)(images)
    with torch.no_grad():
        in_no_grad = _make(method, resnet)(images)
    with torch.inference_mode():
        x = images.clone()  # an inference tensor
        in_inference = _make(method, resnet)(x)
    for got in (frozen, in_no_grad, in_inference):
        torch.testing.assert_close(got, reference)


@pytest.mark.parametrize("method", METHODS)
def test_autocast_bfloat16(method, resnet, images):
    reference = _make(method, resnet).explain(images, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        exp = _make(method, resnet).explain(images, 1)
    assert exp.maps.dtype == torch.float32 and torch.isfinite(exp.maps).all()
    # bf16 has ~3 significant digits; maps must still agree broadly with the float32 ones
    assert (exp.maps - reference.maps).abs().mean() < 0.1


def test_hooks_released(resnet, images):
    layer = resnet.layer4
    with fastcam.GradCAM(resnet, "layer4") as cam:
        assert len(layer._forward_hooks) == 0  # hooks live only during a call
        cam(images)
    assert len(layer._forward_hooks) == 0
    cam.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        cam(images)
    cam2 = fastcam.ScoreCAM(resnet, layer)
    cam2.close()
    assert len(layer._forward_hooks) == 0


def test_no_reference_kept_to_activations(resnet, images):
    cam = fastcam.GradCAM(resnet, "layer4")
    exp = cam.explain(images)
    ref = weakref.ref(exp.maps)
    del exp
    gc.collect()
    assert ref() is None
    assert all(not isinstance(v, torch.Tensor) for v in vars(cam).values())  # no per-call state kept


def test_user_forward_not_captured(resnet, images):
    cam = fastcam.GradCAM(resnet, "layer4")
    with torch.no_grad():
        plain = resnet(images)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in resnet.modules())
    assert cam.explain(images).logits.equal(plain)


def test_inplace_op_after_target_layer():
    """A ReLU(inplace=True) right after the target conv must not corrupt the captured activations."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    x = torch.randn(2, 3, 9, 9)
    exp = fastcam.GradCAM(model, "0").explain(x, 1)
    acts = model[0](x).detach()
    mask = (acts > 0).float()
    grad = (mask * model[4].weight[1][None, :, None, None] / 49).detach()
    expected = torch.relu((grad.mean((2, 3))[:, :, None, None] * acts).sum(1))
    torch.testing.assert_close(exp.lowres, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- degenerate but valid


def test_zero_gradients_are_refused_by_gradient_methods_not_nan():
    """A target whose gradient at the layer is exactly zero for the whole batch (here a zeroed head; in
    practice a ViT's last block, whose patch tokens reach the head only through CLS) gives gradient methods
    nothing to weight with: a clear error instead of silently all-zero (or uniform-weight) maps. Score-CAM
    needs no gradient and stays defined."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    nn.init.zeros_(model[3].weight)
    x = torch.randn(2, 3, 8, 8)
    for method in METHODS:
        if method.uses_gradients:
            with pytest.raises(ValueError, match="exactly zero for every image"):
                _make(method, model, "0")(x)
        else:
            assert torch.isfinite(_make(method, model, "0")(x)).all()


@pytest.mark.parametrize("method", METHODS)
def test_constant_activations_single_channel_1x1(method):
    model = nn.Sequential(nn.Conv2d(3, 1, 8), nn.Flatten(), nn.Linear(1, 2))  # (B, 1, 1, 1) feature map
    x = torch.randn(3, 3, 8, 8)
    maps = _make(method, model, "0")(x, 0)
    assert maps.shape == (3, 8, 8) and torch.isfinite(maps).all()
    const = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    nn.init.zeros_(const[0].weight)
    nn.init.constant_(const[0].bias, 0.5)
    maps = _make(method, const, "0")(x, 1)
    assert torch.isfinite(maps).all()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("method", METHODS + SAMPLING)
def test_bad_images(method, resnet, images):
    cam = _make(method, resnet)
    with pytest.raises(TypeError, match="torch.Tensor"):
        cam(images.numpy())
    with pytest.raises(ValueError, match="4-D"):
        cam(images[0])
    with pytest.raises(ValueError, match="empty batch"):
        cam(images[:0])
    with pytest.raises(ValueError, match="channels"):
        cam(images[:, :2])
    with pytest.raises(TypeError, match="floating"):
        cam(images.to(torch.uint8))
    bad = images.clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        cam(bad)
    bad[1, 0, 3, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        cam(bad)


@pytest.mark.parametrize("method", METHODS + SAMPLING)
def test_bad_targets(method, resnet, images):
    cam = _make(method, resnet)
    with pytest.raises(ValueError, match="out of range"):
        cam(images, 5)
    with pytest.raises(ValueError, match="out of range"):
        cam(images, -1)
    with pytest.raises(ValueError, match="lie in"):
        cam(images, [0, 1, 2, 7])
    with pytest.raises(ValueError, match="lie in"):
        cam(images, torch.tensor([0, -1, 2, 3]))
    with pytest.raises(ValueError, match="got 3 targets"):
        cam(images, [0, 1, 2])
    with pytest.raises(TypeError, match="integer"):
        cam(images, torch.tensor([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(TypeError):
        cam(images, "cat")
    with pytest.raises(ValueError, match="1-D"):
        cam(images, torch.zeros(4, 1, dtype=torch.long))


def test_bad_layers_and_models(resnet, images):
    with pytest.raises(ValueError, match="not a module"):
        fastcam.GradCAM(resnet, "layer9")
    with pytest.raises(ValueError, match="not a submodule"):
        fastcam.GradCAM(resnet, nn.Conv2d(3, 3, 1))
    with pytest.raises(TypeError, match="target_layer"):
        fastcam.GradCAM(resnet, 4)
    with pytest.raises(TypeError, match="nn.Module"):
        fastcam.GradCAM(lambda x: x, "layer4")
    with pytest.raises(ValueError, match="4-D"):
        fastcam.GradCAM(resnet, "fc")(images)
    with pytest.raises(ValueError, match="4-D"):
        fastcam.ScoreCAM(resnet, "fc")(images)
    with pytest.raises(ValueError, match="backend"):
        fastcam.GradCAM(resnet, "layer4", backend="cuda")

    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x)  # (B, C, h, w), not (B, K)

    with pytest.raises(ValueError, match=r"\(B, K\)"):
        fastcam.GradCAM(Flat(), "conv")(images)

    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.side = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            self.side(x)
            return self.fc(self.conv(x).mean((2, 3)))

    with pytest.raises(ValueError, match="does not depend"):
        fastcam.GradCAM(Unused(), "side")(images)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean((2, 3)))

    with pytest.raises(ValueError, match="more than once"):
        fastcam.GradCAM(Twice(), "conv")(images)

    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3)
            self.never = nn.Conv2d(3, 3, 3)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    with pytest.raises(ValueError, match="not called"):
        fastcam.GradCAM(Skips(), "never")(images)


@pytest.mark.parametrize("method", GRADIENT)
def test_only_the_part_after_the_target_layer_is_recorded(method, resnet, images):
    """Layers before the target layer run unrecorded (no saved activations); the caller's mode is restored."""
    seen: dict[str, bool] = {}
    for name in ("layer1", "layer4", "fc"):
        getattr(resnet, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.requires_grad))
    cam = method(resnet, "layer3")
    reference = cam(images, 1)
    assert seen == {"layer1": False, "layer4": True, "fc": True}
    assert torch.is_grad_enabled()
    with torch.no_grad():
        torch.testing.assert_close(cam(images, 1), reference)
        assert not torch.is_grad_enabled()

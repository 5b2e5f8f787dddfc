"""SoftCAM training: the ElasticNet penalty by hand, `fit` lowers the loss, under autocast, bad input."""
from __future__ import annotations

import math

import pytest
import torch
from fastcam_testkit.common import gen

from fastcam import softcam
from fastcam.models import tiny_resnet
from fastcam.softcam import convert, elastic_net

pytestmark = pytest.mark.usefixtures("one_thread")


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
    g = gen(seed)
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

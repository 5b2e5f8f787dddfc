"""Any model output: a tensor, a tuple/list (its first element), a mapping or Hugging Face `ModelOutput`
(its "logits"; torchvision segmentation's "out"), or `output_fn=` for anything else; and target layers
that return tuples. Each is right (the same maps as the plain tensor model, every method) or a clear error.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

import pytest
import torch
from torch import nn

import fastcam
from fastcam.methods.registry import method_names
from fastcam.models import tiny_resnet
from fastcam_testkit.common import gen
from fastcam_testkit.methods import make_method as _make

POST_HOC = method_names(post_hoc=True)


class Wrapped(nn.Module):
    """The same network, its logits returned in another container."""

    def __init__(self, net: nn.Module, wrap: Callable[[torch.Tensor], Any]) -> None:
        super().__init__()
        self.net = net
        self.wrap = wrap

    def forward(self, x: torch.Tensor) -> Any:
        return self.wrap(self.net(x))


def _model_output(logits: torch.Tensor) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.modeling_outputs.ImageClassifierOutput(logits=logits)


WRAPS: dict[str, Callable[[torch.Tensor], Any]] = {
    "tuple": lambda z: (z, z.detach() * 0),
    "list": lambda z: [z, "extra"],
    "dict-logits": lambda z: {"features": z * 2, "logits": z},
    "torchvision-out": lambda z: OrderedDict(out=z, aux=z * 3),
    "ModelOutput": _model_output,
}


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return tiny_resnet(num_classes=5).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=gen(0))


@pytest.mark.parametrize("name", POST_HOC)
@pytest.mark.parametrize("wrap", list(WRAPS))
def test_containers_give_the_plain_models_maps(net: nn.Module, x: torch.Tensor, wrap: str, name: str, one_thread: None) -> None:
    expected = _make(name, net, "layer3").explain(x, [0, 4, 2])
    model = Wrapped(net, WRAPS[wrap])
    cam = _make(name, model, "net.layer3")
    assert cam.layer_name == "net.layer3"  # the model's own names
    got = cam.explain(x, [0, 4, 2])
    torch.testing.assert_close(got.maps, expected.maps, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.logits, expected.logits)
    assert got.targets.tolist() == [0, 4, 2]
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", POST_HOC)
def test_output_fn_picks_the_scores_from_anything(net: nn.Module, x: torch.Tensor, name: str, one_thread: None) -> None:
    expected = _make(name, net, "layer3")(x)

    class Scores:  # not a tensor, not a container fastcam knows
        def __init__(self, z: torch.Tensor) -> None:
            self.scores = z

    model = Wrapped(net, lambda z: {"image": Scores(z), "other": z.sum()})
    with pytest.raises(TypeError, match=r"cannot find the output tensor in a dict with keys \['image', 'other'\]: pass output_fn="):
        _make(name, model, "net.layer3")(x)
    got = _make(name, model, "net.layer3", output_fn=lambda out: out["image"].scores)(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_output_fn_selects_another_element_and_targets_see_its_view(net: nn.Module, x: torch.Tensor) -> None:
    model = Wrapped(net, lambda z: (z.sum(1), z))  # the first element is not the logits
    with pytest.raises(ValueError, match=r"must return \(B, K\) class scores.*BinaryTarget for a \(B,\) single logit"):
        fastcam.GradCAM(model, "net.layer3")(x)
    got = fastcam.GradCAM(model, "net.layer3", output_fn=lambda out: out[1]).explain(x, 1)
    torch.testing.assert_close(got.maps, fastcam.GradCAM(net, "layer3")(x, 1))
    with pytest.raises(TypeError, match="output_fn must be callable"):
        fastcam.GradCAM(model, "net.layer3", output_fn=1)


def test_unusable_outputs_are_clear_errors(net: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(TypeError, match="cannot find the output tensor in a tuple"):
        fastcam.GradCAM(Wrapped(net, lambda z: ("logits", z)), "net.layer3")(x)
    with pytest.raises(TypeError, match="cannot find the output tensor in a str"):
        fastcam.GradCAM(Wrapped(net, lambda z: "nothing"), "net.layer3")(x)
    with pytest.raises(ValueError, match=r"\(B, K, H, W\) segmentation maps"):  # class indices on a 4-D output
        fastcam.GradCAM(Wrapped(net, lambda z: z[:, :, None, None]), "net.layer3")(x, 0)


class TupleLayer(nn.Module):
    """A block returning (hidden, extras), as Hugging Face layers do."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, int]]:
        return self.conv(x), {"calls": 1}


class TupleNet(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.block = TupleLayer(net.layer3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x))))))
        hidden, _ = self.block(x)
        return n.fc(torch.flatten(n.avgpool(n.layer4(hidden)), 1))


@pytest.mark.parametrize("name", POST_HOC)
def test_target_layers_returning_tuples_are_explained_by_their_first_element(net: nn.Module, x: torch.Tensor, name: str,
                                                                             one_thread: None) -> None:
    got = _make(name, TupleNet(net).eval(), "block")(x, 2)
    torch.testing.assert_close(got, _make(name, net, "layer3")(x, 2), rtol=1e-5, atol=1e-6)


def test_target_layers_returning_other_things_are_refused(x: torch.Tensor) -> None:
    class DictLayer(nn.Module):
        def forward(self, t: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"hidden": t}

    model = nn.Sequential(nn.Conv2d(3, 4, 3), DictLayer())
    with pytest.raises(ValueError, match="must output a tensor .* got dict"):
        fastcam.GradCAM(model, "1")(x, 0)

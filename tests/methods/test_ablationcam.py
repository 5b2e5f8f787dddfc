"""Ablation-CAM against a float64 hand computation of the relative drop w = (y - y_c) / |y|, the
torch.fx split against full forwards, and how often the layers before the target run."""
import warnings

import pytest
import torch
from torch import nn

import fastcam
from fastcam.methods.ablationcam import split_at
from fastcam.reshape import vit
from fastcam.targets import BinaryTarget, ClassTarget, Target
from fastcam_testkit.common import output_of

pytestmark = pytest.mark.usefixtures("one_thread")


def _hand(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Per image, per channel: the layer's output with channel c zeroed (a replacing hook, pytorch-grad-cam's
    AblationLayer), a full forward of that one image, the raw target score; the weight is the relative drop
    (y - y_c) / |y| (pytorch-grad-cam divides by y, which flips every weight where y < 0)."""
    acts = output_of(layer, lambda: model(x))
    with torch.no_grad():
        y = target.score(model(x))
    maps = []
    for b in range(x.shape[0]):
        weights = []
        for c in range(acts.shape[1]):
            ablated = acts[b : b + 1].clone()
            ablated[:, c] = 0
            handle = layer.register_forward_hook(lambda m, i, o, a=ablated: a.clone())
            with torch.no_grad():
                y_c = target.select(torch.tensor([b])).score(model(x[b : b + 1]))[0]
            handle.remove()
            weights.append((y[b] - y_c) / y[b].abs())
        w = torch.stack(weights)
        maps.append(torch.relu((w[:, None, None] * acts[b]).sum(0)))
    return torch.stack(maps)


_HAND: dict[str, torch.Tensor] = {}


@pytest.mark.parametrize("layer,chunk,partial", [
    ("layer4", 5, True), ("layer3", 64, True), ("layer4.0.bn1", 7, True), ("layer4.0.bn1", 7, False),
])
def test_float64_hand(layer, chunk, partial, resnet, images):
    model, x = resnet.double(), images[:2].double()
    targets = torch.tensor([0, 2])  # a positive and a negative logit
    if layer not in _HAND:  # the hand computation is the slow part: once per layer
        _HAND[layer] = _hand(model, model.get_submodule(layer), x, ClassTarget(targets))
    expected = _HAND[layer]
    cam = fastcam.AblationCAM(model, layer, batch_size=chunk, partial_forward=partial)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the split must reproduce the scores: no fallback warning
        got = cam.explain(x, targets).lowres.double()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9 * float(expected.max()))
    assert expected.max() > 0
    assert (cam._splits.get(layer, (None, None))[1] is not None) == partial


def _count_calls(module: nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda m, i, o: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("layer,partial,runs", [
    ("layer4", True, 1),          # the tail (avgpool, fc) only: the backbone ran in the call's forward alone
    ("layer4.0.bn1", True, 2),    # + one head run for the residual branch that skips the cut
    ("layer4", False, 1 + 4),     # full forwards: one per chunk (4 images · 64 channels / 64)
])
def test_the_backbone_runs_once_per_call(layer, partial, runs, resnet, images):
    cam = fastcam.AblationCAM(resnet, layer, batch_size=64, partial_forward=partial)
    cam(images)  # the first call traces the model
    calls = _count_calls(resnet.conv1)
    cam(images)
    assert calls == [runs]


def test_untraceable_model_falls_back_to_full_forwards():
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3)
            self.act = nn.ReLU()
            self.fc = nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.act(self.conv(x))
            if a.mean() > -1:  # data-dependent control flow: torch.fx cannot trace it
                a = a * 2
            return self.fc(a.mean((2, 3)))

    torch.manual_seed(0)
    model = DataDependent().double().eval()
    x = torch.randn(3, 3, 10, 9, dtype=torch.float64)
    targets = torch.tensor([0, 2, 1])
    assert split_at(model, model.act) is None
    got = fastcam.AblationCAM(model, "act", batch_size=4).explain(x, targets).lowres.double()
    torch.testing.assert_close(got, _hand(model, model.act, x, ClassTarget(targets)), rtol=1e-6, atol=1e-12)


class _Tokens(nn.Module):
    """A ViT-like toy: patch embedding, a CLS token, a token mixer, a head on the CLS token."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 5, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 5))
        self.block = nn.Linear(5, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = torch.relu(self.block(tokens))
        return self.head(tokens.mean(1))


def test_reshape_transform_ablates_the_channel_of_the_patch_tokens():
    torch.manual_seed(1)
    model = _Tokens().double().eval()
    x = torch.randn(2, 3, 12, 8, dtype=torch.float64)
    targets = torch.tensor([2, 0])
    got = fastcam.AblationCAM(model, "block", reshape_transform=vit(1, grid=(3, 2))).explain(x, targets).lowres.double()
    tokens = output_of(model.block, lambda: model(x))  # (B, 1 + 6, 5)
    with torch.no_grad():
        y = model(x).gather(1, targets[:, None])[:, 0]
    maps = vit(1, grid=(3, 2))(tokens)  # (B, 5, 3, 2)
    expected = []
    for b in range(2):
        w = []
        for c in range(5):
            ablated = tokens[b : b + 1].clone()
            ablated[:, 1:, c] = 0  # the channel of the patch tokens; the CLS token is not part of the map
            h = model.block.register_forward_hook(lambda m, i, o, a=ablated: a)
            with torch.no_grad():
                w.append((y[b] - model(x[b : b + 1])[0, targets[b]]) / y[b].abs())
            h.remove()
        expected.append(torch.relu((torch.stack(w)[:, None, None] * maps[b]).sum(0)))
    torch.testing.assert_close(got, torch.stack(expected), rtol=1e-6, atol=1e-12)


def test_reshape_transform_must_only_rearrange(resnet, images):
    cam = fastcam.AblationCAM(resnet, "layer4", reshape_transform=lambda t: t * 2)
    with pytest.raises(ValueError, match="only rearrange"):
        cam(images)


def test_a_stale_split_is_retraced_when_a_module_is_replaced(resnet, images):
    cam = fastcam.AblationCAM(resnet, "layer4")
    before = cam(images, 1)
    key = cam._splits["layer4"][0]
    torch.manual_seed(9)
    resnet.fc = nn.Linear(resnet.fc.in_features, 5)
    after = cam(images, 1)
    assert cam._splits["layer4"][0] != key
    expected = fastcam.AblationCAM(resnet, "layer4", partial_forward=False)(images, 1)
    torch.testing.assert_close(after, expected)
    assert not torch.allclose(before, after)


def test_zero_score_and_bad_options(resnet, images):
    with pytest.raises(ValueError, match="batch_size"):
        fastcam.AblationCAM(resnet, "layer4", batch_size=0)
    with pytest.raises(TypeError, match="partial_forward"):
        fastcam.AblationCAM(resnet, "layer4", partial_forward=1)
    nn.init.zeros_(resnet.fc.bias)
    nn.init.zeros_(resnet.fc.weight[2])  # y = 0 for class 2: weights fall back to y - y_c (= 0 here)
    maps = fastcam.AblationCAM(resnet, "layer4")(images, 2)
    assert torch.isfinite(maps).all()


def test_negative_scores_keep_the_sign_of_the_drop(resnet, images):
    """Issue 24 item 8: dividing by a negative score flipped every weight (on the least likely class the map
    correlated -0.4 to -0.5 with the right one). The weight is the drop relative to |y|."""
    model, x = resnet.double(), images[:2].double()
    targets = torch.tensor([2, 2])
    with torch.no_grad():
        assert (model(x)[:, 2] < 0).all()  # the case: negative target scores
    expected = _hand(model, model.layer3, x, ClassTarget(targets))
    got = fastcam.AblationCAM(model, "layer3", batch_size=64).explain(x, targets).lowres.double()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9 * float(expected.max()))
    assert (expected.flatten(1).amax(1) > 0).all()


def test_binary_target_against_gives_the_evidence_against(images):
    """BinaryTarget(positive=False) scores -z: its weights are the positive target's negated (evidence
    against, as for the gradient methods), not the positive map again."""
    torch.manual_seed(0)
    model = fastcam.models.tiny_resnet(num_classes=1).eval().double()
    x = images[:2].double()
    cam = fastcam.AblationCAM(model, "layer3", batch_size=64)
    lowres = {}
    for positive in (True, False):
        expected = _hand(model, model.layer3, x, BinaryTarget(positive=positive))
        lowres[positive] = cam.explain(x, BinaryTarget(positive=positive)).lowres.double()
        torch.testing.assert_close(lowres[positive], expected, rtol=1e-6, atol=1e-9 * float(expected.max()))
        assert (expected.flatten(1).amax(1) > 0).all()
    assert not ((lowres[True] > 0) & (lowres[False] > 0)).any()  # ReLU(S) and ReLU(-S): never both positive

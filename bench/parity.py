"""Print the measured agreement of fastcam's methods with their independent oracles.

    python bench/parity.py

The tests assert tolerances; this prints the actual max abs / max relative differences for the notes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

import fastcam
import fastcam.methods.registry
from fastcam.models import tiny_resnet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' float64 oracles
from fastcam_testkit.pgc import activations_and_grads, cam_image  # noqa: E402


def _minmax(x: torch.Tensor) -> torch.Tensor:
    low = x.flatten(1).min(1).values[:, None, None]
    return (x - low) / (x.flatten(1).max(1).values[:, None, None] - low + 1e-8)


def _report(name: str, ours: torch.Tensor, theirs: torch.Tensor) -> None:
    diff = (ours.double() - theirs.double()).abs()
    rel = diff / theirs.double().abs().clamp_min(1e-12)
    print(f"| {name} | {diff.max().item():.2e} | {rel[theirs.abs() > 1e-6].max().item():.2e} | {theirs.abs().max().item():.3g} |")


def _correlation(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """The smallest per-image Pearson correlation (images whose oracle map is all zero left out)."""
    live = theirs.flatten(1).amax(1) > 0
    a, b = ours[live].flatten(1).double(), theirs[live].flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return float(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).min())


def issue17(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor) -> None:
    """The methods of issue 17 against torchcam and the float64 pytorch-grad-cam formulas."""
    import torchcam.methods as tc

    print("\n| check | max abs diff | max rel diff | oracle max | min per-image correlation |\n|---|---|---|---|---|")

    def report(name: str, ours: torch.Tensor, theirs: torch.Tensor) -> None:
        diff = (ours.double() - theirs.double()).abs()
        rel = diff / theirs.double().abs().clamp_min(1e-12)
        print(f"| {name} | {diff.max().item():.2e} | {rel[theirs.abs() > 1e-6].max().item():.2e} | "
              f"{theirs.abs().max().item():.3g} | {_correlation(ours, theirs):.7f} |")

    for name in ("LayerCAM", "XGradCAM"):
        for layer in ("layer3", "layer4"):
            ours = getattr(fastcam, name)(model, layer).explain(x, targets).lowres
            with getattr(tc, name)(model, target_layer=layer) as ex:
                (theirs,) = ex(targets.tolist(), model(x))
            report(f"{name} {layer} vs torchcam (min-max)", _minmax(ours), theirs.detach())
    for name, kwargs, seed in (("SSCAM", {"num_samples": 4}, 7), ("ISCAM", {"num_samples": 4}, None)):
        ours = getattr(fastcam, name)(model, "layer4", score="logit", generator=seed, **kwargs) if seed is not None \
            else getattr(fastcam, name)(model, "layer4", score="logit", **kwargs)
        ours = ours.explain(x, targets).lowres
        if seed is not None:
            torch.manual_seed(seed)
        with getattr(tc, name)(model, target_layer="layer4", input_shape=tuple(x.shape[1:]), **kwargs) as ex:
            with torch.no_grad():
                out = model(x)
            (theirs,) = ex(targets.tolist(), out)
        report(f"{name} vs torchcam (min-max{', same seed' if seed is not None else ''})", _minmax(ours), theirs)
    m64, x64 = model.double(), x.double()
    for method in ("hirescam", "gradcamelementwise", "eigencam", "eigengradcam", "layercam", "xgradcam"):
        (acts,), (grads,), _ = activations_and_grads(m64, ["layer3"], x64, targets)
        expected = torch.relu(cam_image(method, acts, grads))
        got = fastcam.methods.registry.method_class(method)(m64, "layer3").explain(x64, targets).lowres
        report(f"{method} layer3 vs float64 pytorch-grad-cam formula", got, expected)
    model.float()


def main() -> None:
    from captum.attr import LayerGradCam
    from torchcam.methods import GradCAM as TcGradCAM
    from torchcam.methods import ScoreCAM as TcScoreCAM

    torch.manual_seed(0)
    model = tiny_resnet(num_classes=5, width=16).eval()
    x = torch.randn(8, 3, 96, 80, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    print("| check | max abs diff | max rel diff | oracle max |\n|---|---|---|---|")
    ours = fastcam.GradCAM(model, "layer4").explain(x, targets).lowres
    cap = LayerGradCam(model, model.layer4).attribute(x, target=targets, relu_attributions=True)[:, 0].detach()
    _report("Grad-CAM vs captum LayerGradCam (raw)", ours, cap)
    with TcGradCAM(model, target_layer="layer4") as ex:
        (tc,) = ex(targets.tolist(), model(x))
    _report("Grad-CAM vs torchcam GradCAM (min-max)", _minmax(ours), tc.detach())
    ours = fastcam.ScoreCAM(model, "layer4", score="logit").explain(x, targets).lowres
    with TcScoreCAM(model, target_layer="layer4", input_shape=tuple(x.shape[1:])) as ex:
        with torch.no_grad():
            out = model(x)
        (tc,) = ex(targets.tolist(), out)
    _report("Score-CAM(score='logit') vs torchcam ScoreCAM (min-max)", _minmax(ours), tc)
    m64, x64 = model.double(), x.double()
    for cls in (fastcam.GradCAM, fastcam.GradCAMPlusPlus, fastcam.ScoreCAM):
        ref = cls(m64, "layer4").explain(x64, targets).lowres
        got = cls(model.float(), "layer4").explain(x, targets).lowres
        _report(f"{cls.__name__} float32 vs float64 run", got, ref)
        m64 = model.double()
    issue17(model.float(), x, targets)


if __name__ == "__main__":
    main()

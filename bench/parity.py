"""Print the measured agreement of fastcam's methods with their independent oracles.

    python bench/parity.py

The tests assert tolerances; this prints the actual max abs / max relative differences for the notes.
"""
from __future__ import annotations

import torch

import fastcam
from fastcam.models import tiny_resnet


def _minmax(x: torch.Tensor) -> torch.Tensor:
    low = x.flatten(1).min(1).values[:, None, None]
    return (x - low) / (x.flatten(1).max(1).values[:, None, None] - low + 1e-8)


def _report(name: str, ours: torch.Tensor, theirs: torch.Tensor) -> None:
    diff = (ours.double() - theirs.double()).abs()
    rel = diff / theirs.double().abs().clamp_min(1e-12)
    print(f"| {name} | {diff.max().item():.2e} | {rel[theirs.abs() > 1e-6].max().item():.2e} | {theirs.abs().max().item():.3g} |")


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


if __name__ == "__main__":
    main()

"""Measure fastcam.metrics against Quantus on matched settings and write the figures.

    pip install quantus==0.6.0        # not a fastcam dependency (it pulls pandas and OpenCV)
    python bench/quantus_parity.py    # -> bench/results/quantus_parity_cpu.json

A tiny random CNN on 1-channel 16 x 16 images (one channel, so Quantus's per-feature ranking is the
per-pixel one), continuous random maps (no ties) unless a check is about ties. docs/quantus.md explains
each figure.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

import fastcam
from fastcam.metrics import activation_precision, deletion, energy_pointing_game, pointing_game

OUT = Path(__file__).resolve().parent / "results" / "quantus_parity_cpu.json"


def main() -> dict[str, object]:
    """Run every comparison; returns the figures (also written to OUT)."""
    import quantus

    warnings.filterwarnings("ignore")  # Quantus warns about its own defaults on every call
    torch.manual_seed(0)
    batch, height, width, steps = 8, 16, 16, 16
    model = fastcam.models.tiny_resnet(num_classes=3, in_channels=1).eval()
    images = torch.rand(batch, 1, height, width)
    maps = torch.rand(batch, height, width)
    masks = torch.zeros(batch, height, width, dtype=torch.bool)
    masks[:, 4:10, 3:12] = True
    with torch.no_grad():
        labels = model(images).argmax(1)
    common = dict(model=model, x_batch=images.numpy(), y_batch=labels.numpy(), device="cpu")
    quiet = dict(disable_warnings=True, display_progressbar=False)
    out: dict[str, object] = {}

    # deletion vs PixelFlipping: H*W/steps pixels a step, baseline 0, softmax probabilities
    ours = deletion(model, images, maps, labels, steps=steps, baseline="zeros", batch_size=256)
    flipping = quantus.PixelFlipping(features_in_step=height * width // steps, perturb_baseline=0.0,
                                     normalise=False, abs=False, **quiet)
    theirs = np.array(flipping(a_batch=maps[:, None].numpy(), softmax=True, **common))
    curve = ours.curve.numpy()
    out["deletion_curve_vs_pixel_flipping_max_abs_diff"] = float(np.abs(curve[:, 1:] - theirs).max())  # no k = 0
    quantus_auc = np.trapezoid(theirs, dx=1, axis=1)
    # ours: (1/n) * trapezoid over k = 0..n; Quantus: trapezoid over k = 1..n with dx = 1
    out["deletion_auc_converted_vs_quantus_max_abs_diff"] = float(
        np.abs(ours.auc.numpy() * steps - (curve[:, 0] + curve[:, 1]) / 2 - quantus_auc).max())
    out["deletion_auc_vs_quantus_auc_over_n_max_abs_diff"] = float(np.abs(ours.auc.numpy() - quantus_auc / steps).max())

    # pointing game: one maximum per map, then two tied maxima with the first (row-major) outside the mask
    game = quantus.PointingGame(**quiet)
    hits = pointing_game(maps, masks).numpy().astype(bool)
    quantus_hits = np.array(game(a_batch=maps[:, None].numpy(), s_batch=masks[:, None].numpy(), **common), dtype=bool)
    out["pointing_game_agreement"] = f"{int((hits == quantus_hits).sum())}/{batch}"
    tied = maps * 0.5
    tied[:, 0, 0] = tied[:, 5, 5] = 1.0
    quantus_tied = game(a_batch=tied[:, None].numpy(), s_batch=masks[:, None].numpy(), **common)
    out["pointing_game_tied_maxima_hits_fastcam_quantus"] = [int(pointing_game(tied, masks).sum()),
                                                            int(np.sum(quantus_tied))]

    # positive energy inside the mask: AttributionLocalisation on signed maps
    signed = maps - 0.5
    localisation = quantus.AttributionLocalisation(abs=False, positive_attributions=True, normalise=False, **quiet)
    share = np.array(localisation(a_batch=signed[:, None].numpy(), s_batch=masks[:, None].numpy(), **common))
    out["attribution_localisation_vs_energy_pointing_game_box_false_max_abs_diff"] = float(
        np.abs(energy_pointing_game(signed, masks, box=False).numpy() - share).max())
    out["attribution_localisation_vs_activation_precision_max_abs_diff"] = float(
        np.abs(activation_precision(signed, masks).numpy() - share).max())
    out["setup"] = {"quantus": quantus.__version__, "torch": torch.__version__, "dtype": "float32",
                    "model": "fastcam.models.tiny_resnet(num_classes=3, in_channels=1), random init, seed 0",
                    "images": [batch, 1, height, width], "steps": steps}
    OUT.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))

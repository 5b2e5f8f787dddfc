"""Evaluation metrics for saliency maps, batched on the device.

Faithfulness (model forwards on perturbed inputs): `deletion`, `insertion` (RISE AUC),
`average_drop_increase` (Grad-CAM++'s Average Drop / Increase in Confidence).
Localisation against ground-truth masks: `pointing_game`, `energy_pointing_game`,
`activation_precision`, `activation_sensitivity` (SoftCAM).
Robustness: `gradient_noise_robustness` (CF-CAM's protocol) with `ssim` (Wang et al. 2004) and `mse`.
"""
from fastcam.metrics.faithfulness import (
    CurveResult,
    DropIncrease,
    average_drop_increase,
    deletion,
    gaussian_blur,
    insertion,
    make_baseline,
    pixel_ranks,
)
from fastcam.metrics.localization import (
    activation_precision,
    activation_sensitivity,
    bounding_boxes,
    energy_pointing_game,
    pointing_game,
    positive_part,
)
from fastcam.metrics.robustness import DEFAULT_SIGMAS, RobustnessResult, gradient_noise, gradient_noise_robustness
from fastcam.metrics.ssim import mse, ssim

__all__ = [
    "DEFAULT_SIGMAS",
    "CurveResult",
    "DropIncrease",
    "RobustnessResult",
    "activation_precision",
    "activation_sensitivity",
    "average_drop_increase",
    "bounding_boxes",
    "deletion",
    "energy_pointing_game",
    "gaussian_blur",
    "gradient_noise",
    "gradient_noise_robustness",
    "insertion",
    "make_baseline",
    "mse",
    "pixel_ranks",
    "pointing_game",
    "positive_part",
    "ssim",
]

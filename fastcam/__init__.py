"""fastcam: fast, batched, on-device class activation maps for CNNs.

>>> import fastcam
>>> maps = fastcam.GradCAM(model, "layer4")(images)      # (B, H, W) in [0, 1]
"""
from fastcam.explanation import Explanation
from fastcam.methods import BaseCAM, GradCAM, GradCAMPlusPlus, ScoreCAM
from fastcam.methods import CFCAM
from fastcam.methods import SoftCAM
from fastcam import softcam

from fastcam.pipeline import explain_dataset, open_run

__version__ = "0.1.0"

__all__ = ["BaseCAM", "CFCAM", "Explanation", "GradCAM", "GradCAMPlusPlus", "ScoreCAM", "SoftCAM", "softcam", "explain_dataset", "open_run", "__version__"]

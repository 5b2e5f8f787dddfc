"""One file per method; each adds a `_get_weights` hook over the shared path in `base.py`."""
from fastcam.methods.base import BaseCAM
from fastcam.methods.cfcam import CFCAM
from fastcam.methods.gradcam import GradCAM
from fastcam.methods.gradcampp import GradCAMPlusPlus
from fastcam.methods.scorecam import ScoreCAM
from fastcam.methods.softcam import SoftCAM

__all__ = ["BaseCAM", "CFCAM", "GradCAM", "GradCAMPlusPlus", "ScoreCAM", "SoftCAM"]

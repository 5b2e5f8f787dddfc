"""pytorch-grad-cam's `pytorch_grad_cam.utils`: `model_targets`, `image` and `reshape_transforms`."""
from fastcam.compat.pytorch_grad_cam.utils import image, model_targets, reshape_transforms

__all__ = ["image", "model_targets", "reshape_transforms"]

"""pytorch-grad-cam 1.5.7's API over fastcam: switch with `from fastcam.compat import pytorch_grad_cam` in
place of `import pytorch_grad_cam` (and `fastcam.compat.pytorch_grad_cam.utils.model_targets` /
`.utils.image` for its submodules).

    cam = GradCAM(model=model, target_layers=[model.layer4[-1]])
    grayscale_cam = cam(input_tensor=x, targets=[ClassifierOutputTarget(281)] * len(x))  # numpy (B, H, W)

Every class runs fastcam's explainer of the same method (`fastcam.methods`) once for the whole batch on
the model's device: the target objects are gathered into one batched fastcam target
(`utils.model_targets.to_fastcam_target`), `aug_smooth`'s augmented copies run as one batch, and the
maps are scaled as pytorch-grad-cam scales them (`utils.image.pgc_maps`: per-image min-max), returned
as a float32 numpy array on the CPU. Where the results differ from pytorch-grad-cam's, on purpose:

- Eigen-CAM, Eigen-Grad-CAM and `eigen_smooth` keep fastcam's sign of the principal component (the one
  along the mean activation); pytorch-grad-cam keeps the SVD's arbitrary sign, so its map of an image
  can be the negated one.
- Grad-CAM++ has no 1e-6 in its α denominator (pytorch-grad-cam's), which only matters where gradients
  are below ~1e-3; Ablation-CAM ablates to 0 (pytorch-grad-cam too, on layers whose minimum is 0; on
  others it ablates to "minimum - 1e7").
- Errors are raised, never swallowed (pytorch-grad-cam's context manager prints and swallows
  `IndexError`s), and a targets list must hold one target per image.

docs/migrate.md has the side-by-side calls and the measured parity.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from fastcam.compat.pytorch_grad_cam import utils
from fastcam.compat.pytorch_grad_cam.utils.image import pgc_maps
from fastcam.compat.pytorch_grad_cam.utils.model_targets import to_fastcam_target
from fastcam.methods._smoothing import AUGMENTATIONS
from fastcam.methods.registry import method_class

__all__ = [
    "AblationCAM", "AblationLayer", "AblationLayerFasterRCNN", "AblationLayerVit", "BaseCAM", "CFCAM",
    "DeepFeatureFactorization", "EigenCAM", "EigenGradCAM", "FinerCAM", "FullGrad", "GradCAM",
    "GradCAMElementWise", "GradCAMPlusPlus", "GuidedBackpropReLUModel", "HiResCAM", "KPCA_CAM", "LayerCAM",
    "ScoreCAM", "ShapleyCAM", "XGradCAM", "utils",
]

#: a pair (augment the batch, de-augment its maps) of `aug_smooth`
Transform = tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]


@functools.cache
def fastcam_class(method: str) -> type:
    """fastcam's explainer class of `method` (a registry id) with pytorch-grad-cam's conventions: several
    layers fused as it fuses them, and Score-CAM's masks upsampled, then normalised."""
    base = method_class(method)

    def fuse(lowres: list[Tensor], size: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        return base._fuse(lowres, size)[0], pgc_maps(lowres, size)

    conventions: dict[str, Any] = {"_fuse": staticmethod(fuse), "__module__": __name__}
    if hasattr(base, "upsample_then_normalize"):  # Score-CAM's masks as pytorch-grad-cam builds them
        conventions["upsample_then_normalize"] = True
    return type(f"PytorchGradCam{base.__name__}", (base,), conventions)


def _default_transforms() -> list[Transform]:
    """pytorch-grad-cam's default `tta_transforms` (horizontal flip × intensity 0.9, 1, 1.1): fastcam's
    `aug_smooth` copies, each with its inverse."""
    def augment(flip: bool, factor: float) -> Callable[[Tensor], Tensor]:
        return lambda x: (x.flip(-1) if flip else x) * factor

    def back(flip: bool) -> Callable[[Tensor], Tensor]:
        return lambda m: m.flip(-1) if flip else m

    return [(augment(flip, factor), back(flip)) for flip, factor in AUGMENTATIONS]


class BaseCAM:
    """pytorch-grad-cam's `BaseCAM` over fastcam's explainer of the same method.

    Args:
        model: the model; put in eval mode here, as pytorch-grad-cam does.
        target_layers: a list of modules of the model (several: their maps are fused as pytorch-grad-cam).
        reshape_transform: turns a layer's output into (B, C, h, w) maps (ViT tokens, Swin stages).
        compute_input_gradient: accepted for pytorch-grad-cam's signature; no method here needs it.
        uses_gradients: accepted for pytorch-grad-cam's signature; must agree with the method (None: it does).
        tta_transforms: `aug_smooth`'s transforms as a `ttach.Compose` (None: pytorch-grad-cam's default).
        detach: must be True (False serves pytorch-grad-cam's ShapleyCAM, not implemented here).
    """

    #: the fastcam registry id of the method
    method: ClassVar[str] = ""

    def __init__(self, model: nn.Module, target_layers: Sequence[nn.Module], reshape_transform: Callable[[Tensor], Tensor] | None = None,
                 compute_input_gradient: bool = False, uses_gradients: bool | None = None,
                 tta_transforms: Any = None, detach: bool = True) -> None:
        if type(self) is BaseCAM:
            raise TypeError("BaseCAM is abstract: use one of its subclasses (GradCAM, ScoreCAM, ...)")
        if isinstance(target_layers, nn.Module) or not isinstance(target_layers, Sequence) or not target_layers:
            raise TypeError("target_layers must be a non-empty list of modules, e.g. [model.layer4[-1]]")
        explainer = fastcam_class(self.method)
        if uses_gradients is not None and bool(uses_gradients) != explainer.uses_gradients:
            raise ValueError(f"{type(self).__name__} {'uses' if explainer.uses_gradients else 'does not use'} gradients; "
                             f"got uses_gradients={uses_gradients!r}")
        if not detach:
            raise NotImplementedError("detach=False (the input Hessian of pytorch-grad-cam's ShapleyCAM) is not implemented")
        self.model = model
        self.model.eval()
        self.target_layers = list(target_layers)
        self.reshape_transform = reshape_transform
        self.compute_input_gradient = compute_input_gradient
        self.uses_gradients = explainer.uses_gradients
        self.tta_transforms = tta_transforms
        self.detach = detach
        #: the last call's model outputs as fastcam reports them (the (B, K) scores)
        self.outputs: Tensor | None = None
        self._explainers: dict[tuple[Any, ...], Any] = {}

    def _options(self) -> dict[str, Any]:
        """The method's own arguments of fastcam's explainer (read per call: attributes may change)."""
        return {}

    def _explainer(self, eigen_smooth: bool) -> Any:
        options = {"reshape_transform": self.reshape_transform, "eigen_smooth": eigen_smooth, **self._options()}
        key = tuple((name, id(value) if callable(value) else value) for name, value in sorted(options.items()))
        if key not in self._explainers:  # kept: explainers cache per-model work (Ablation-CAM's split)
            self._explainers[key] = fastcam_class(self.method)(self.model, self.target_layers, **options)
        return self._explainers[key]

    def _transforms(self) -> list[Transform]:
        if self.tta_transforms is None:
            return _default_transforms()
        return [(t.augment_image, lambda m, t=t: t.deaugment_mask(m.unsqueeze(1)).squeeze(1)) for t in self.tta_transforms]

    def _maps(self, images: Tensor, targets: Sequence[Callable[[Tensor], Tensor]] | None, eigen_smooth: bool) -> Tensor:
        """(B, *spatial) float32 maps of `images`, scaled as pytorch-grad-cam (one fastcam call)."""
        target = to_fastcam_target(targets, images.shape[0])
        explanation = self._explainer(eigen_smooth and self._eigen_smooth_applies()).explain(images, target)
        self.outputs = explanation.logits
        if len(self.target_layers) > 1:
            return explanation.maps  # fused by `fastcam_class`'s pytorch-grad-cam fusion
        return pgc_maps([explanation.lowres], tuple(images.shape[2:]))

    def _eigen_smooth_applies(self) -> bool:
        return True

    def _device(self) -> torch.device:
        parameter = next(self.model.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def forward(self, input_tensor: Tensor, targets: Sequence[Callable[[Tensor], Tensor]] | None,
                eigen_smooth: bool = False) -> np.ndarray:
        """The maps of one batch without test-time augmentation (see `__call__`)."""
        images = input_tensor.to(self._device())
        return self._maps(images, targets, eigen_smooth).detach().cpu().numpy().astype(np.float32)

    def forward_augmentation_smoothing(self, input_tensor: Tensor, targets: Sequence[Callable[[Tensor], Tensor]] | None,
                                       eigen_smooth: bool = False) -> np.ndarray:
        """The mean of the de-augmented maps of every `tta_transforms` copy, all copies in one batch."""
        images = input_tensor.to(self._device())
        transforms = self._transforms()
        rows = torch.cat([augment(images) for augment, _ in transforms])
        maps = self._maps(rows, None if targets is None else list(targets) * len(transforms), eigen_smooth)
        copies = maps.split(images.shape[0])
        back = torch.stack([deaugment(m) for (_, deaugment), m in zip(transforms, copies)])
        return back.mean(dim=0).detach().cpu().numpy().astype(np.float32)

    def __call__(self, input_tensor: Tensor, targets: Sequence[Callable[[Tensor], Tensor]] | None = None,
                 aug_smooth: bool = False, eigen_smooth: bool = False) -> np.ndarray:
        """float32 numpy (B, H, W) maps in [0, 1] (min-max scaled per image), as pytorch-grad-cam returns them.

        Args:
            input_tensor: (B, C, H, W) images (moved to the model's device).
            targets: one target per image (`utils.model_targets`, or any callable of the image's output row);
                None explains each image's predicted class.
            aug_smooth: average over the `tta_transforms` copies (one batch for all of them).
            eigen_smooth: the first principal component of the weighted activations instead of their sum.
        """
        if aug_smooth:
            return self.forward_augmentation_smoothing(input_tensor, targets, eigen_smooth)
        return self.forward(input_tensor, targets, eigen_smooth)

    def __enter__(self) -> "BaseCAM":
        return self

    def __exit__(self, *exc: object) -> None:
        """No hook outlives a call (fastcam's explainers install them per call): nothing to release."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fastcam {method_class(self.method).__name__}, {len(self.target_layers)} layer(s))"


class GradCAM(BaseCAM):
    """Grad-CAM (fastcam.GradCAM)."""

    method = "gradcam"


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ (fastcam.GradCAMPlusPlus; no 1e-6 in the α denominator, see the module docstring)."""

    method = "gradcampp"


class XGradCAM(BaseCAM):
    """XGrad-CAM (fastcam.XGradCAM)."""

    method = "xgradcam"


class LayerCAM(BaseCAM):
    """Layer-CAM (fastcam.LayerCAM)."""

    method = "layercam"


class HiResCAM(BaseCAM):
    """HiResCAM (fastcam.HiResCAM)."""

    method = "hirescam"


class GradCAMElementWise(BaseCAM):
    """Grad-CAM element-wise (fastcam.GradCAMElementWise)."""

    method = "gradcamelementwise"


class EigenCAM(BaseCAM):
    """Eigen-CAM (fastcam.EigenCAM; fastcam's sign). `eigen_smooth` is ignored, as in pytorch-grad-cam."""

    method = "eigencam"

    def _eigen_smooth_applies(self) -> bool:
        return False


class EigenGradCAM(EigenCAM):
    """Eigen-Grad-CAM (fastcam.EigenGradCAM; fastcam's sign). `eigen_smooth` is ignored."""

    method = "eigengradcam"


class CFCAM(BaseCAM):
    """CF-CAM (fastcam.CFCAM, fastcam's own method: no pytorch-grad-cam counterpart), in this API."""

    method = "cfcam"


class ScoreCAM(BaseCAM):
    """Score-CAM (fastcam.ScoreCAM scoring the target's raw value, as pytorch-grad-cam).

    `batch_size` (masked inputs per forward, pytorch-grad-cam's attribute, default 16) may also be set
    on the object after construction; fastcam packs the masked inputs of all images into those forwards.
    """

    method = "scorecam"

    def __init__(self, model: nn.Module, target_layers: Sequence[nn.Module],
                 reshape_transform: Callable[[Tensor], Tensor] | None = None, *, batch_size: int = 16, **kwargs: Any) -> None:
        super().__init__(model, target_layers, reshape_transform, **kwargs)
        self.batch_size = batch_size

    def _options(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "score": "logit"}


class AblationLayer(nn.Module):
    """pytorch-grad-cam's default ablation layer, accepted by `AblationCAM` (fastcam ablates any layout
    through `reshape_transform`, so `AblationLayerVit` does the same)."""


class AblationLayerVit(AblationLayer):
    """pytorch-grad-cam's ablation layer for ViT tokens; fastcam needs none (see `AblationLayer`)."""


class AblationLayerFasterRCNN(AblationLayer):
    """Not available: fastcam does not explain detectors."""

    def __init__(self) -> None:
        raise NotImplementedError("AblationLayerFasterRCNN (object detection) is not implemented in fastcam")


class AblationCAM(BaseCAM):
    """Ablation-CAM (fastcam.AblationCAM: the ablated copies of every image and channel packed into forwards
    of `batch_size`, and only the layers after the target re-run where the model splits there).

    Args:
        model: as `BaseCAM`.
        target_layers: as `BaseCAM`.
        reshape_transform: as `BaseCAM`.
        ablation_layer: `AblationLayer()` or `AblationLayerVit()`, accepted for pytorch-grad-cam's signature.
        batch_size: ablated copies per forward.
        ratio_channels_to_ablate: must be 1.0 (every channel ablated; pytorch-grad-cam's experimental
            channel selection is not implemented).
        **kwargs: `BaseCAM`'s other arguments.
    """

    method = "ablationcam"

    def __init__(self, model: nn.Module, target_layers: Sequence[nn.Module], reshape_transform: Callable[[Tensor], Tensor] | None = None,
                 ablation_layer: nn.Module | None = None, batch_size: int = 32, ratio_channels_to_ablate: float = 1.0,
                 **kwargs: Any) -> None:
        if ablation_layer is not None and not isinstance(ablation_layer, AblationLayer):
            raise NotImplementedError("a custom ablation_layer is not implemented: fastcam ablates a channel to 0 "
                                      "(fastcam.AblationCAM's ablation_value) in any layout")
        if ratio_channels_to_ablate != 1.0:
            raise NotImplementedError("ratio_channels_to_ablate < 1 is not implemented: fastcam ablates every channel, "
                                      "packed into batched forwards of only the layers after the target")
        super().__init__(model, target_layers, reshape_transform, **kwargs)
        self.ablation_layer = ablation_layer
        self.batch_size = batch_size
        self.ratio_channels_to_ablate = ratio_channels_to_ablate

    def _options(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size}


def _not_implemented(name: str, alternative: str) -> type:
    def __init__(self: object, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(f"{name} is not implemented in fastcam; {alternative}")

    return type(name, (), {"__init__": __init__, "__doc__": f"Not available in fastcam: {alternative}", "__module__": __name__})


FullGrad = _not_implemented("FullGrad", "for gradients fused over many layers use fastcam.LayerCAM or fastcam.HiResCAM "
                                        "with a list of target layers")
GuidedBackpropReLUModel = _not_implemented("GuidedBackpropReLUModel", "use captum.attr.GuidedBackprop (or "
                                           "captum.attr.GuidedGradCam) for guided backpropagation")
DeepFeatureFactorization = _not_implemented("DeepFeatureFactorization", "fastcam.EigenCAM gives the activations' first "
                                            "principal component (one concept per image)")
KPCA_CAM = _not_implemented("KPCA_CAM", "fastcam.EigenCAM projects on the linear first principal component")
FinerCAM = _not_implemented("FinerCAM", "explain a contrast of classes with fastcam.GradCAM and a "
                            "fastcam.targets.FunctionTarget, e.g. lambda out: out[:, main] - out[:, other]")
ShapleyCAM = _not_implemented("ShapleyCAM", "fastcam.HiResCAM or fastcam.GradCAM (first-order gradient methods)")

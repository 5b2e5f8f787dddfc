r"""The capture/combine path every post-hoc method shares; each method adds one `_get_weights(ctx)`.

One call, end to end (`fastcam.GradCAM(model, "layer4")(images)`):
validate the images and the model (no host sync) → register the capture hooks *for this call and thread*
(`fastcam.methods._capture`) → forward (no_grad until the target layer, the graph recorded after it) →
remove the hooks → one `torch.autograd.grad` to the target layers' outputs only (gradient methods) →
`_get_weights(ctx)` → `combine` (weighted sum, ReLU, upsample, normalise; Triton or torch through the one
dispatcher `fastcam._backend.op`) → one host sync for every NaN/Inf check of the call (pixels, logits,
activations, gradients, weights, maps: a non-finite value anywhere raises `NonFiniteError` naming the
images, never a NaN map) → `Explanation`. Methods whose weights run the model again (Score-CAM's family,
Ablation-CAM: `weights_run_model`) read the checks up to the gradients before those forwards too.
Methods whose map is not a per-channel weighted sum (HiResCAM, Layer-CAM, Eigen-CAM, ...) override
`_get_lowres(ctx)` instead; their (B, *spatial) map goes through the shared `upsample_normalize` op.

Options every method shares (see `fastcam.methods._smoothing`): `aug_smooth` runs pytorch-grad-cam's six
augmented copies of the batch in the same forward and averages the de-augmented maps; `eigen_smooth`
replaces the channel sum by the first principal component; gradient methods add SmoothGrad
(`smooth=N` noisy copies in the same forward/backward).

The explainer keeps no per-call state: everything a call computes travels in its `CallContext`, so one
explainer may serve several threads, and other threads' forwards of the same model are never touched.
Weights are per-channel (B, C) in float32 (float64 kept), and the shared path computes

$$ L = \mathrm{ReLU}\Big(\sum_c w_c A_c\Big), \qquad M = \frac{U(L)}{\max U(L)} $$

with $U$ bilinear (trilinear for volumes) upsampling to the input size.
"""
from __future__ import annotations

import copy
import threading
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, ContextManager, Sequence, Union

import torch
from torch import Tensor, nn

from fastcam._backend import check_backend, op, resolve_backend
from fastcam._validation import (
    SPATIAL_RANKS,
    FiniteCheck,
    TargetsLike,
    UninformativeMapWarning,
    check_has_values,
    check_image_batch,
    check_model_input,
    resolve_layers,
)
from fastcam.explanation import Explanation
from fastcam.methods._capture import capture
from fastcam.methods._smoothing import (
    ImageNoise,
    augment,
    check_generator,
    deaugment,
    head_rows,
    make_generator,
    mean_over_copies,
    owner,
    per_image,
    with_noise_copies,
)
from fastcam.ops import accumulation, channel_map, check_int, check_real, max_normalize, upsample
from fastcam.targets import Target, check_scores, primary_tensor, resolve_target

ReshapeTransform = Callable[[Tensor], Tensor]
#: a target layer: a module or its dotted name, or several of them (their maps are fused)
TargetLayers = Union[nn.Module, str, list[Union[nn.Module, str]], tuple[Union[nn.Module, str], ...]]
OutputFn = Callable[[Any], Tensor]


@dataclass
class CallContext:
    """What one `explain` call knows, handed to `_get_weights`; explainers keep no per-call state.

    Attributes:
        model: the model explained.
        images: (B, C, H, W) or (B, C, D, H, W) input batch.
        output: the model's output as targets see it (after the explainer's `output_fn`).
        logits: (B, K) class scores when the output has them, else None.
        target: what is explained (`fastcam.targets`): `target.score(output)` per image.
        targets: (B,) int64 class explained per image (-1 where the target is not one class).
        activations: (B, C, *spatial) the target layer's output after `reshape_transform`, detached.
        gradients: (B, C, *spatial) d score / d activations (gradient methods; None otherwise), after the
            explainer's gradient transform (`GradientCAM.gradient_noise`).
        backend: "triton" or "torch", resolved once for the call.
        caller_amp: the caller's autocast dtype on this device, or None.
        layer_name: the target layer this context describes (multi-layer calls make one per layer).
        extras: "output_fn"; "layer_output": the layer's raw output (before `reshape_transform`) for the
            rows explained; with SmoothGrad, "gradient_samples" (N, B, C, *spatial): the N noisy copies'
            gradients whose mean is `gradients` (Grad-CAM++ averages their powers).

    With `aug_smooth`, B counts the augmented copies: every field describes the rows explained.
    """

    model: nn.Module
    images: Tensor
    output: Any
    logits: Tensor | None
    target: Target
    targets: Tensor
    activations: Tensor
    gradients: Tensor | None
    backend: str
    caller_amp: torch.dtype | None
    layer_name: str
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def device_type(self) -> str:
        return self.images.device.type

    def view(self, output: Any) -> Any:
        """A model output as the target sees it (the explainer's `output_fn` applied): for extra forwards."""
        return self.extras["output_fn"](output) if self.extras.get("output_fn") is not None else output

    def model_autocast(self) -> ContextManager[Any]:
        """The caller's autocast setting, for extra model forwards made while computing weights."""
        return torch.autocast(device_type=self.device_type, dtype=self.caller_amp, enabled=self.caller_amp is not None)

    @property
    def spatial_dims(self) -> tuple[int, ...]:
        """The dims of `activations` that are spatial: (2, 3) for maps, (2, 3, 4) for volumes."""
        return tuple(range(2, self.activations.dim()))


class Explainer:
    """The protocol every explainer shares (the post-hoc methods and SoftCAM).

    `explainer(images, targets=None)` -> (B, H, W) float32 maps in [0, 1] on the images' device;
    `explainer.explain(...)` -> `fastcam.Explanation`. `close()` and the context manager are valid and
    harmless: no hook lives outside a call, so there is nothing to leak; a closed explainer refuses calls.
    """

    #: the method registry id ("gradcam"); see `fastcam.methods.registry`
    name: ClassVar[str] = ""
    #: whether the method back-propagates to the target layer
    uses_gradients: ClassVar[bool] = False
    #: the explained layer's dotted name (a list for several layers); None for methods without one (SoftCAM)
    layer_name: str | list[str] | None = None

    _closed: bool = False

    def __call__(self, images: Tensor, targets: TargetsLike = None) -> Tensor:
        """(B, H, W) float32 maps in [0, 1] on the images' device ((B, D, H, W) for volumes)."""
        return self.explain(images, targets).maps

    def explain(self, images: Tensor, targets: TargetsLike = None) -> Explanation:
        """Explain a batch: maps (B, H, W), lowres (B, h, w), logits (B, K), targets (B,)."""
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} was closed; create a new one")
        if not self.uses_gradients:
            return self._explain(images, targets)
        # Tensors made in inference mode cannot enter autograd: gradient methods work outside it, on normal
        # tensors (the copies cost one pass over the batch, only for inference tensors).
        with torch.inference_mode(False) if torch.is_inference_mode_enabled() else nullcontext():
            if isinstance(images, Tensor) and images.is_inference():
                images = images.clone()
            return self._explain(images, targets)

    def explain_per_class(self, images: Tensor, classes: Sequence[int] | Tensor) -> Explanation:
        """One map per class (multi-label heads, or several classes side by side), in one batched call.

        classes: K class indices for every image ((K,) or a sequence), or (B, K) per image. The images are
        repeated K times (each image's copies adjacent) and explained once with one class per copy, so
        the B·K maps come from one forward and one backward.

        Returns an `Explanation` with a class dim after the batch dim: maps (B, K, H, W), lowres
        (B, K, h, w), targets (B, K), logits (B, num_classes) of the original images. To explain several
        classes *together* (one map of their summed scores), pass `fastcam.targets.MultiLabelTarget`.
        """
        images = check_image_batch(images)
        batch = images.shape[0]
        index = check_has_values(classes, "classes") if isinstance(classes, Tensor) else torch.as_tensor(list(classes), dtype=torch.long)
        if index.is_floating_point() or index.dtype == torch.bool or index.dim() not in (1, 2) or index.numel() == 0:
            raise TypeError(f"classes must be K class indices or (B, K) of them, got {index.dtype} {tuple(index.shape)}")
        if index.dim() == 1:
            index = index.unsqueeze(0).expand(batch, -1)
        if index.shape[0] != batch:
            raise ValueError(f"classes has {index.shape[0]} rows for a batch of {batch} images")
        count = index.shape[1]
        exp = self.explain(images.repeat_interleave(count, dim=0), index.reshape(-1).to(images.device))
        return Explanation(
            maps=exp.maps.view(batch, count, *exp.maps.shape[1:]),
            lowres=exp.lowres.view(batch, count, *exp.lowres.shape[1:]),
            logits=exp.logits.view(batch, count, *exp.logits.shape[1:])[:, 0],
            targets=exp.targets.view(batch, count),
        )

    def _explain(self, images: Tensor, targets: TargetsLike) -> Explanation:
        raise NotImplementedError

    def close(self) -> None:
        """Mark the explainer closed (idempotent). No hooks exist outside a call, so nothing else happens."""
        self._closed = True

    def __enter__(self) -> "Explainer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _caller_amp(device_type: str) -> torch.dtype | None:
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def _dead_gradient_message(name: str) -> str:
    return (
        f"the target's gradient at layer {name!r} is exactly zero for every image of the batch, so a gradient "
        "method has nothing to weight the channels with (Grad-CAM would give all-zero maps, CF-CAM uniform "
        "weights). The target does not depend on this layer's positions: in a ViT the last block's patch "
        "tokens reach the classifier only through the CLS token, so explain the last block's first norm "
        "(timm 'blocks.-1.norm1', Hugging Face 'vit.layers.-1.layernorm_before', as pytorch-grad-cam does) or "
        "an earlier block; elsewhere pick a layer the target depends on, or a gradient-free method (Score-CAM). "
        "A classifier head initialised to zero (torchvision initialises its ViT heads so) gives this too: a "
        "randomly initialised model of that kind has nothing to explain until it is trained or loaded"
    )


def _fits_image(spatial: tuple[int, ...], image_size: tuple[int, ...]) -> bool:
    """Whether `spatial` sizes could be a feature map of an image of `image_size`: one stride along every
    axis. Taking some axis k as the reference, every other axis j must have about the image's proportion,
    n_j ≈ H_j · n_k / H_k, within a cell (or 15 % on large maps) for the rounding and padding of
    convolution arithmetic."""
    for k in range(len(spatial)):
        scale = spatial[k] / image_size[k]
        if all(abs(size * scale - cells) <= max(1.0, 0.15 * cells) for size, cells in zip(image_size, spatial)):
            return True
    return False


class BaseCAM(Explainer):
    """Base class of the post-hoc CAM methods.

    Args:
        model: a classifier; its output is a (B, K) tensor, a tuple/list (first element), a mapping or
            Hugging Face `ModelOutput` (its "logits"), or anything `output_fn` turns into (B, K) scores.
        target_layer: the module (or its dotted name, e.g. "layer4", "features.29") whose output is
            explained, or a list of them: the per-layer maps are fused (see `_fuse`).
        backend: "auto" (Triton on CUDA when importable), "triton" or "torch"; None reads the
            FASTCAM_BACKEND environment variable.
        reshape_transform: turns the layer output into (B, C, h, w) (or (B, C, d, h, w)) for layers of
            another layout (ViT tokens, Swin's channels-last maps): see `fastcam.reshape`.
        output_fn: picks the (B, K) scores from the model's output when the defaults above do not.
        allow_train_mode: explain a model that is in training mode as it is (batch statistics, BatchNorm
            running statistics updated). By default such a model is refused: call `model.eval()`.
        aug_smooth: pytorch-grad-cam's test-time augmentation: the maps of the batch's horizontal flips ×
            intensity factors (0.9, 1, 1.1) (six copies, run in the same forward), flipped back, averaged
            and max-normalised. The target is resolved once, on the unaugmented copy.
        eigen_smooth: the map is the first principal component of the per-channel contributions
            (w_c A_c, or the method's element-wise products) instead of their sum (`fastcam.ops.eigen`).

    No hook is installed outside a call. The model's train/eval mode and its parameters' `requires_grad`
    are left as they were; parameters' `.grad` are never computed.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | list[nn.Module | str] | tuple[nn.Module | str, ...],
        *,
        backend: str | None = None,
        reshape_transform: ReshapeTransform | None = None,
        output_fn: OutputFn | None = None,
        allow_train_mode: bool = False,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, nn.DataParallel):
            raise TypeError(
                "nn.DataParallel runs the model in worker threads, where an explanation cannot follow it; "
                "explain the wrapped model (model.module) on one device, or scale out with "
                "DistributedDataParallel / torchrun (fastcam.explain_dataset shards across ranks)"
            )
        for name, value in (("reshape_transform", reshape_transform), ("output_fn", output_fn)):
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")
        self.model = model
        self.layers = resolve_layers(model, target_layer)
        self.layer_name = self.layers[0][0] if len(self.layers) == 1 else [name for name, _ in self.layers]
        self.layer = self.layers[0][1]
        self.backend = check_backend(backend)
        self.reshape_transform = reshape_transform
        self.output_fn = output_fn
        self.allow_train_mode = bool(allow_train_mode)
        for name, value in (("aug_smooth", aug_smooth), ("eigen_smooth", eigen_smooth)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        if eigen_smooth and self.is_principal_component:  # refused, not ignored
            raise ValueError(f"{type(self).__name__} already projects on the first principal component; "
                             "eigen_smooth does not apply")
        self.aug_smooth, self.eigen_smooth = aug_smooth, eigen_smooth
        # (layer name, image shape) -> the 1×1-map warning given (derived from the model's structure)
        self._single_cell_warnings: dict[tuple[str, tuple[int, ...]], str] = {}

    #: SmoothGrad noisy copies per image (gradient methods set it; 0 = none)
    smooth: int = 0
    #: the map is a first principal component already (the Eigen methods): `eigen_smooth=True` is refused
    is_principal_component: ClassVar[bool] = False
    #: whether `_get_weights` runs the model again (Score-CAM's masked inputs, Ablation-CAM's ablations): the
    #: inputs' checks are then read before the weights, so a non-finite batch costs none of those forwards
    weights_run_model: ClassVar[bool] = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target_layer={self.layer_name!r}, backend={self.backend!r})"

    # ------------------------------------------------------------------ the shared path
    def _forward(self, images: Tensor) -> tuple[Any, list[Tensor]]:
        """Run the model once with this call's hooks; returns (model output, raw target-layer outputs)."""
        with capture(self.model, self.layers, record_after=self.uses_gradients, images_channels=images.shape[1]) as state:
            # Gradient methods: nothing before the first target layer is recorded (its hook switches
            # recording on; leaving no_grad restores the caller's mode), so the backbone's activations are
            # not kept for a backward that never reaches them.
            with torch.no_grad():
                output = self.model(images)
        missing = [name for name, out in zip(state.names, state.outputs) if out is None]
        if missing:
            raise ValueError(f"target layer {missing[0]!r} was not called during the model's forward")
        return output, list(state.outputs)  # type: ignore[arg-type]

    def _layout(self, raw: Tensor, name: str, image_size: tuple[int, ...]) -> Tensor:
        """The layer output as (B, C, *spatial): through `reshape_transform`, or refused if ambiguous.

        Without a transform, a 3-D output (tokens) is refused, and so is a 4-D/5-D output that reads as
        channels-last: its dims 1..-1 are laid out like the image (`_fits_image`) while its dims 2.. are
        not (Swin/ConvNeXt stages in timm: (B, 7, 7, 768), or (B, 8, 8, 12) with few channels for 32 x 32
        images), or dims 1 and 2 are equal and dim 3 much larger. An output that fits both readings (C equal
        to the map's sizes, (B, 8, 8, 8) for 32 x 32 images) cannot be told apart by its shape: it is read
        channels-first, the convention of every CNN; channels-last layers of that shape need `nhwc`.
        """
        if self.reshape_transform is not None:
            out = self.reshape_transform(raw)
            if not isinstance(out, Tensor) or out.dim() - 2 not in SPATIAL_RANKS or out.shape[0] != raw.shape[0]:
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(
                    f"reshape_transform must return (B, C, h, w) or (B, C, d, h, w) with B = {raw.shape[0]} for "
                    f"layer {name!r}, got {shape}"
                )
            return out
        shape = tuple(raw.shape)
        if raw.dim() == 3:
            raise ValueError(
                f"target layer {name!r} outputs a 3-D token sequence {shape}, not a 4-D (B, C, h, w) map: pass "
                "reshape_transform=fastcam.reshape.vit() (ViT/DeiT, with prefix tokens) or fastcam.reshape.swin() "
                "((B, L, C) sequences)"
            )
        if raw.dim() - 2 in SPATIAL_RANKS and len(image_size) == raw.dim() - 2 and (
            (raw.dim() == 4 and raw.shape[1] == raw.shape[2] and raw.shape[3] > 4 * raw.shape[1]
             and not _fits_image(shape[2:], image_size))
            or (_fits_image(shape[1:-1], image_size) and not _fits_image(shape[2:], image_size))
        ):
            layout = "(B, h, w, C)" if raw.dim() == 4 else "(B, d, h, w, C)"
            raise ValueError(
                f"target layer {name!r} outputs {shape}, which looks channels-last {layout} for images of size "
                f"{image_size}: pass reshape_transform=fastcam.reshape.nhwc, or a transform to channels-first "
                "if it is not"
            )
        if raw.dim() - 2 not in SPATIAL_RANKS:
            raise ValueError(
                f"target layer {name!r} must output a 4-D (B, C, h, w) tensor (5-D (B, C, d, h, w) for volumes), "
                f"got {shape}"
            )
        return raw

    def _gradients(self, scores: Tensor, raws: list[Tensor]) -> list[Tensor]:
        """d y / d A for every target layer, y = sum_b score_b: one backward for the whole batch (images
        are independent) and all layers."""
        if not scores.requires_grad:
            raise ValueError(f"the model's output does not depend on target layer {self.layers[0][0]!r}")
        with torch.enable_grad():  # the caller may be inside no_grad: the score must join the recorded graph
            grads = torch.autograd.grad(accumulation(scores).sum(), raws, allow_unused=True)
        for (name, _), grad in zip(self.layers, grads):
            if grad is None:
                raise ValueError(f"the model's output does not depend on target layer {name!r}")
        return list(grads)

    def _transform_gradients(self, gradients: Tensor, ctx_images: Tensor) -> Tensor:
        """Gradient methods may transform dY/dA before any weighting (noise for robustness studies)."""
        return gradients

    def _model_inputs(self, rows: Tensor, batch: int) -> Tensor:
        """What the forward runs: the rows explained (row r belongs to image r mod `batch`), then any extra
        copies (SmoothGrad's noisy ones)."""
        return rows

    def _explain(self, images: Tensor, targets: TargetsLike) -> Explanation:
        images = check_image_batch(images)
        check_model_input(self.model, images, allow_train_mode=self.allow_train_mode)
        finite = FiniteCheck()
        finite.add("images (pixels)", images)
        batch = images.shape[0]
        size = tuple(images.shape[2:])
        # Rows explained: the images, or with aug_smooth their augmented copies (copy 0: the images). The
        # forward runs them and, for SmoothGrad, their noisy copies after them: one forward for all, and the
        # target is resolved on the first `batch` rows (the images as given).
        rows = augment(images) if self.aug_smooth else images
        inputs = self._model_inputs(rows, batch)
        output, raws = self._forward(inputs)
        for (name, _), raw in zip(self.layers, raws):  # reported in the order the values arise
            finite.add(f"the activations of layer {name!r}", per_image(raw, batch))
        view_all = self.output_fn(output) if self.output_fn is not None else output
        view = view_all if inputs.shape[0] == batch else head_rows(view_all, batch)
        with torch.enable_grad() if self.uses_gradients else nullcontext():  # the score joins the graph
            target, logits = resolve_target(targets, view, batch)
            if inputs.shape[0] != batch:
                target = target.select(owner(inputs.shape[0], batch, images.device))
            scores = check_scores(target.score(view_all), inputs.shape[0])
        if logits is not None:
            finite.add("the model's logits", logits)
        else:
            finite.add("the target scores", per_image(scores, batch))
        classes = target.classes if target.classes is not None else torch.full((batch,), -1, dtype=torch.long)
        classes = classes if classes.shape[0] == batch else classes[:batch]
        classes = classes.to(images.device)
        device_type = images.device.type
        amp = _caller_amp(device_type)
        # SmoothGrad: only the noisy copies' scores are differentiated (the clean rows give the activations)
        grad_scores = scores[rows.shape[0]:] if self.smooth else scores
        raw_grads = self._gradients(grad_scores, raws) if self.uses_gradients else [None] * len(raws)
        explained = rows.shape[0]
        if explained != inputs.shape[0]:
            view_all = head_rows(view_all, explained)
            target = target.select(owner(explained, batch, images.device))
        row_logits = logits if logits is None or explained == batch else primary_tensor(view_all)
        contexts = []
        alive: list[Tensor] = []  # per layer: the target's gradient there is not exactly zero for the whole batch
        for (name, _), raw, raw_grad in zip(self.layers, raws, raw_grads):
            raw_rows = raw.detach() if explained == raw.shape[0] else raw.detach()[:explained]
            activations = self._layout(raw_rows, name, size)
            gradients, extras = None, {"output_fn": self.output_fn, "layer_output": raw_rows}
            if raw_grad is not None:
                gradients = self._layout(raw_grad, name, size)
                finite.add(f"the gradients at layer {name!r}", per_image(gradients, batch))
                alive.append(gradients.any())
                if self.smooth:
                    gradients, extras["gradient_samples"] = mean_over_copies(gradients, explained)
                gradients = self._transform_gradients(gradients, rows)
            if activations.dim() != images.dim():
                raise ValueError(
                    f"layer {name!r} gives {activations.dim() - 2}-D maps {tuple(activations.shape)} for "
                    f"{images.dim() - 2}-D images {tuple(images.shape)}"
                )
            if activations.shape[2:].numel() == 1:
                self._warn_single_cell(name, tuple(activations.shape), images)
            contexts.append(CallContext(
                model=self.model, images=rows, output=view_all, logits=row_logits, target=target,
                targets=classes if explained == batch else classes.repeat(explained // batch),
                activations=activations, gradients=gradients,
                backend=resolve_backend(self.backend, activations), caller_amp=amp, layer_name=name, extras=extras,
            ))
        flags = torch.stack(alive) if alive else None
        if self.weights_run_model:
            # read before the weights' own forwards, so a bad batch costs none of them; the weights and the
            # maps are read after (a second sync, beside the thousands of forwards it guards)
            self._raise_if_failed(finite, flags)
            finite, flags = FiniteCheck(), None
        # Weights and the combine are computed in float32 even inside a caller's autocast region; model
        # forwards inside `_get_weights` get the caller's autocast back through `ctx.model_autocast()`.
        try:
            with torch.autocast(device_type=device_type, enabled=False):
                results = [self._combine(ctx, size, finite, batch) for ctx in contexts]
                lowres, maps = results[0] if len(results) == 1 else self._fuse([low for low, _ in results], size)
                if self.aug_smooth:
                    lowres, maps = deaugment(lowres, batch), deaugment(maps, batch)
        except Exception:
            self._raise_if_failed(finite, flags)  # a non-finite value or a dead gradient explains the failure
            raise
        finite.add("the maps", maps)
        # the call's one host sync (the second with `weights_run_model`): every value on the way to the
        # maps is finite, the maps included
        self._raise_if_failed(finite, flags)
        scores_out = logits if logits is not None else scores[:batch].unsqueeze(1)
        return Explanation(maps=maps, lowres=lowres, logits=scores_out.detach().float(), targets=classes)

    def _warn_single_cell(self, name: str, shape: tuple[int, ...], images: Tensor) -> None:
        """Warn (`UninformativeMapWarning`, once per layer and image size) that `name`'s maps are 1×1,
        naming the last layer before it with a larger map (found by one probe forward of one image)."""
        key = (name, tuple(images.shape[1:]))
        message = self._single_cell_warnings.get(key)
        if message is None:
            earlier = None if self.model.training else self._last_layer_with_a_map(dict(self.layers)[name], images[:1])
            instead = (f"explain {earlier!r} instead (the last layer before it with a larger map)" if earlier
                       else "explain an earlier layer with a larger map")
            message = (f"layer {name!r} gives 1×1 maps {shape} for images of size {tuple(images.shape[2:])}: every "
                       "map is constant (all ones; all zeros for the Eigen methods) and says nothing about where "
                       f"the evidence is; {instead}, or give larger images")
            self._single_cell_warnings[key] = message
            warnings.warn(message, UninformativeMapWarning, stacklevel=5)

    def _last_layer_with_a_map(self, layer: nn.Module, image: Tensor) -> str | None:
        """The module that finishes last before `layer` starts, among those whose output is a map larger than
        1×1, in one forward of `image` (hooks for that forward and this thread only), or None."""
        thread, started, found = threading.get_ident(), [False], []

        def start(module: nn.Module, inputs: Any) -> None:
            started[0] = started[0] or threading.get_ident() == thread

        def record(name: str) -> Callable[..., None]:
            def hook(module: nn.Module, inputs: Any, output: Any) -> None:
                if (threading.get_ident() == thread and not started[0] and isinstance(output, Tensor)
                        and output.dim() == image.dim() and output.shape[2:].numel() > 1):
                    found.append(name)
            return hook

        handles = [layer.register_forward_pre_hook(start)]
        handles += [m.register_forward_hook(record(n)) for n, m in self.model.named_modules() if n and m is not layer]
        try:
            with torch.no_grad():
                self.model(image)
        finally:
            for handle in handles:
                handle.remove()
        return found[-1] if found else None

    def _raise_if_failed(self, finite: FiniteCheck, alive: Tensor | None) -> None:
        """One host read: `NonFiniteError` for the first non-finite value queued in `finite`, else a
        ValueError for the first layer whose `alive` flag (the target's gradient there is not all zero) is
        False."""
        for (name, _), is_alive in zip(self.layers, finite.raise_if_any(alive)):
            if not is_alive:
                raise ValueError(_dead_gradient_message(name))

    def _combine(self, ctx: CallContext, size: tuple[int, ...], finite: FiniteCheck, batch: int) -> tuple[Tensor, Tensor]:
        """(lowres, maps) of one layer. Weighted-sum methods take the fused `combine` op (weighted sum, ReLU,
        upsample, normalise in one pass); methods overriding `_get_lowres`, and `eigen_smooth`, take
        `_get_lowres` followed by the shared `upsample_normalize` op. The weights (or the lowres map) are
        queued in `finite` per image of the `batch`."""
        if not self.eigen_smooth and type(self)._get_lowres is BaseCAM._get_lowres:
            weights = self._get_weights(ctx)
            finite.add(f"the channel weights at layer {ctx.layer_name!r}", per_image(weights, batch))
            return op("combine", ctx.backend)(ctx.activations, weights, size)
        lowres = self._get_lowres(ctx)
        finite.add(f"the map at layer {ctx.layer_name!r}", per_image(lowres, batch))
        return lowres, op("upsample_normalize", ctx.backend)(lowres, size)

    def _get_lowres(self, ctx: CallContext) -> Tensor:
        r"""The extension point of maps that are not a per-channel weighted sum: (B, *spatial) float32 >= 0
        at the layer's resolution. The default is $\mathrm{ReLU}(\sum_c w_c A_c)$ with $w$ from
        `_get_weights` (or, with `eigen_smooth`, the ReLU'd first principal component of $w_c A_c$)."""
        weights = self._get_weights(ctx)
        contributions = weights.view(*weights.shape, *([1] * len(ctx.spatial_dims))) * accumulation(ctx.activations)
        return channel_map(contributions, eigen=self.eigen_smooth)

    @staticmethod
    def _fuse(lowres: list[Tensor], size: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        r"""Multi-layer fusion, pytorch-grad-cam's aggregation: each layer's ReLU'd map normalised at its
        own resolution, upsampled to the input, averaged over the layers, normalised again:

        $$ M = \mathrm{norm}\Big(\frac1{n}\sum_l U\big(\mathrm{norm}(L_l)\big)\Big) $$

        pytorch-grad-cam's norm is min-max, $(x - \min x) / (\max x - \min x + 10^{-7})$; fastcam's is
        $x / \max x$ (maps are ReLU'd, so they already start at 0 unless no pixel is zero; an all-zero map
        stays zero), as for single-layer maps. `lowres` is the same fusion at the finest layer's resolution.
        """
        finest = max((low.shape[1:] for low in lowres), key=lambda s: torch.Size(s).numel())
        normed = [max_normalize(low.float()) for low in lowres]
        maps = torch.stack([upsample(n, size) for n in normed]).mean(dim=0)
        lows = torch.stack([upsample(n, tuple(finest)) for n in normed]).mean(dim=0)
        return max_normalize(lows), max_normalize(maps)

    def _get_weights(self, ctx: CallContext) -> Tensor:
        """Per-channel weights (B, C), float32 or wider (`accumulation`)."""
        raise NotImplementedError


class GradientCAM(BaseCAM):
    r"""Base class of the methods that weight channels from dY/dA (Grad-CAM, Grad-CAM++, CF-CAM, ...).

    Extra args:
        smooth: SmoothGrad (Smilkov et al. 2017) as torchcam's Smooth Grad-CAM++ (Omeiza et al. 2019) uses
            it: N noisy copies $x + \varepsilon_n$, $\varepsilon_n \sim \mathcal N(0, \sigma^2)$, of every
            image run in the *same* forward and backward as the images (B·(N+1) rows); the method's formula
            then takes $\bar g = \frac1N \sum_n \partial y / \partial A(x + \varepsilon_n)$ as the gradient
            and the clean image's activations $A(x)$ (Grad-CAM++ averages $g^2$ and $g^3$ instead).
            0 = off.
        smooth_sigma: the noise std $\sigma$, in input units (torchcam's default 0.3).
        gradient_noise: std of Gaussian noise added to dY/dA before any weighting (robustness studies;
            0 = none), the same for every gradient method (see fastcam.metrics.gradient_noise_robustness).
        generator: the source of both noises: a `torch.Generator` on the images' device (its state
            advances), an int seed, or None (torch's global RNG). With an int seed, SmoothGrad's noise is
            drawn per image, image i of the call from a generator seeded with seed + i
            (`fastcam.methods._smoothing.ImageNoise`): an image's map does not depend on its batch-mates
            (it equals the image explained alone with seed + i) and repeats on every call; the gradient
            noise takes a fresh generator seeded with the seed on each call (the same noise for the same
            shapes).
    """

    uses_gradients = True

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | list[nn.Module | str] | tuple[nn.Module | str, ...],
        *,
        smooth: int = 0,
        smooth_sigma: float = 0.3,
        gradient_noise: float = 0.0,
        generator: torch.Generator | int | None = None,
        backend: str | None = None,
        reshape_transform: ReshapeTransform | None = None,
        output_fn: OutputFn | None = None,
        allow_train_mode: bool = False,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> None:
        super().__init__(model, target_layer, backend=backend, reshape_transform=reshape_transform,
                         output_fn=output_fn, allow_train_mode=allow_train_mode, aug_smooth=aug_smooth,
                         eigen_smooth=eigen_smooth)
        self.smooth = check_int("smooth", smooth, low=0)  # noisy copies per image
        self.smooth_sigma = check_real("smooth_sigma", smooth_sigma, low=0, low_inclusive=True)
        self.gradient_noise = check_real("gradient_noise", gradient_noise, low=0, low_inclusive=True)
        self.generator = check_generator(generator)

    def with_gradient_noise(self, sigma: float, generator: torch.Generator | int | None = None) -> "GradientCAM":
        """A copy of this explainer whose gradients get N(0, sigma²) noise (this one is left unchanged)."""
        noisy = copy.copy(self)
        noisy.gradient_noise = check_real("sigma", sigma, low=0, low_inclusive=True)
        noisy.generator = generator
        return noisy

    def _model_inputs(self, rows: Tensor, batch: int) -> Tensor:
        if not self.smooth:
            return rows
        return with_noise_copies(rows, self.smooth, self.smooth_sigma, ImageNoise(self.generator, batch, rows.device), batch)

    def _transform_gradients(self, gradients: Tensor, images: Tensor) -> Tensor:
        if not self.gradient_noise:
            return gradients
        generator = make_generator(self.generator, gradients.device)
        noise = torch.randn(gradients.shape, generator=generator, device=gradients.device, dtype=gradients.dtype)
        return gradients + self.gradient_noise * noise

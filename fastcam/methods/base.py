"""The capture/combine path every post-hoc method shares; each method adds one `_get_weights` hook.

A forward hook on the target layer captures its output A (B, C, h, w). Gradient methods re-root the
graph there: the hook swaps the layer's output for a fresh leaf that requires grad (captum's trick, so
frozen models and a caller's `torch.no_grad()` work), and gradients come from
`torch.autograd.grad(sum_b y_b[t_b], A)`: parameters' `.grad` is never computed or touched.
The method turns (A, dY/dA) into per-channel weights w (B, C) in float32, and the shared path computes
ReLU(sum_c w_c A_c), bilinear upsampling to the input size and per-image max-normalisation.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fastcam._backend import check_backend, resolve_backend
from fastcam._validation import TargetsLike, check_images, check_logits, resolve_layer, resolve_targets
from fastcam.explanation import Explanation
from fastcam.methods._combine import accumulation, combine


class BaseCAM:
    """Base class of the post-hoc CAM methods (Grad-CAM, Grad-CAM++, Score-CAM, CF-CAM).

    Args:
        model: a classifier returning (B, K) scores.
        target_layer: the module (or its dotted name, e.g. "layer4", "features.29") whose 4-D output is
            explained.
        backend: "auto" (Triton on CUDA when importable), "triton" or "torch"; None reads the
            FASTCAM_BACKEND environment variable.

    Use as a context manager, or call `close()`, to remove the hook. The model's train/eval mode and its
    parameters' `requires_grad` are left as they were.
    """

    #: whether `_get_weights` needs dY/dA (then the forward runs with autograd on)
    uses_gradients: ClassVar[bool] = True
    #: robustness studies: std of Gaussian noise added to dY/dA before any weighting (0 = off), drawn from
    #: `noise_generator` (None: torch's default); see fastcam.metrics.gradient_noise_robustness
    gradient_noise: float = 0.0
    noise_generator: torch.Generator | None = None

    def __init__(self, model: nn.Module, target_layer: nn.Module | str, *, backend: str | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.layer_name, self.layer = resolve_layer(model, target_layer)
        self.backend = check_backend(backend)
        self._capturing = False
        self._with_grad = False
        self._captured: Tensor | None = None
        self._hook: Any = self.layer.register_forward_hook(self._on_forward)

    # ------------------------------------------------------------------ hooks
    def _on_forward(self, module: nn.Module, inputs: Any, output: Any) -> Tensor | None:
        if not self._capturing:
            return None
        if not isinstance(output, Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(
                f"target layer {self.layer_name!r} must output a 4-D (B, C, h, w) tensor, got {shape}"
            )
        if self._captured is not None:
            raise ValueError(f"target layer {self.layer_name!r} runs more than once per forward; pick a module used once")
        if self._with_grad:
            leaf = output.detach().requires_grad_(True)
            self._captured = leaf
            # The layers before this one ran without recording (see `_forward`); from here on the graph
            # is recorded, so the backward covers only the part of the network after the target layer.
            torch.set_grad_enabled(True)
            # The model continues on a copy: an in-place op after the layer (ReLU(inplace=True)) then
            # cannot alter the captured activations or their gradient.
            return leaf.clone()
        self._captured = output.detach().clone()
        return None

    def close(self) -> None:
        """Remove the hook from the model (idempotent)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def __enter__(self) -> "BaseCAM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten close() must not leave a hook behind
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target_layer={self.layer_name!r}, backend={self.backend!r})"

    # ------------------------------------------------------------------ capture
    def _forward(self, images: Tensor, with_grad: bool) -> tuple[Any, Tensor]:
        """Run the model once, capturing the target layer's output. Returns (model output, A)."""
        if self._hook is None:
            raise RuntimeError(f"{type(self).__name__} was closed; create a new one")
        self._captured = None
        self._capturing, self._with_grad = True, with_grad
        try:
            if with_grad:
                # Grad mode is thread-local state: the hook switches recording on at the target layer and
                # leaving this block restores the caller's mode. Nothing before the layer is recorded, so
                # its activations are not kept for a backward that never reaches them.
                with torch.no_grad():
                    output = self.model(images)
            else:
                with torch.no_grad():
                    output = self.model(images)
            activations = self._captured
        finally:
            self._capturing, self._with_grad, self._captured = False, False, None
        if activations is None:
            raise ValueError(f"target layer {self.layer_name!r} was not called during the model's forward")
        return output, activations

    def _gradients(self, logits: Tensor, activations: Tensor, targets: Tensor) -> Tensor:
        """dY/dA for Y = sum_b logits[b, t_b]; one backward for the whole batch (images are independent)."""
        if not logits.requires_grad:
            raise ValueError(f"the model's output does not depend on target layer {self.layer_name!r}")
        # the caller may be inside no_grad: the score must join the recorded graph
        with torch.enable_grad():
            score = accumulation(logits).gather(1, targets.unsqueeze(1)).sum()
            (grad,) = torch.autograd.grad(score, activations, allow_unused=True)
        if grad is None:
            raise ValueError(f"the model's output does not depend on target layer {self.layer_name!r}")
        if self.gradient_noise:
            noise = torch.randn(grad.shape, generator=self.noise_generator, device=grad.device, dtype=grad.dtype)
            grad = grad + self.gradient_noise * noise
        return grad

    # ------------------------------------------------------------------ public API
    def __call__(self, images: Tensor, targets: TargetsLike = None) -> Tensor:
        """(B, H, W) float32 maps in [0, 1] on the images' device."""
        return self.explain(images, targets).maps

    def explain(self, images: Tensor, targets: TargetsLike = None) -> Explanation:
        """Explain a batch: maps (B, H, W), lowres (B, h, w), logits (B, K), targets (B,)."""
        if self.uses_gradients and torch.is_inference_mode_enabled():
            # tensors made in inference mode cannot enter autograd: work outside it, on normal tensors
            with torch.inference_mode(False):
                if images.is_inference():
                    images = images.clone()
                if isinstance(targets, Tensor) and targets.is_inference():
                    targets = targets.clone()
                return self._explain(images, targets)
        return self._explain(images, targets)

    def _explain(self, images: Tensor, targets: TargetsLike) -> Explanation:
        images = check_images(images, self.model)
        output, activations = self._forward(images, with_grad=self.uses_gradients)
        logits = check_logits(output, images.shape[0])
        target_idx = resolve_targets(targets, logits)
        backend = resolve_backend(self.backend, activations)
        device_type = activations.device.type
        self._caller_amp = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        # Weights and the combine are computed in float32 even inside a caller's autocast region;
        # model forwards inside `_get_weights` get the caller's autocast back through `_model_autocast`.
        with torch.autocast(device_type=device_type, enabled=False):
            weights = self._get_weights(images=images, activations=activations, logits=logits, targets=target_idx)
            lowres, maps = self._combine(activations, weights, tuple(images.shape[-2:]), backend)
        return Explanation(maps=maps, lowres=lowres, logits=logits.detach().float(), targets=target_idx)

    def _model_autocast(self, device_type: str) -> torch.autocast:
        """The caller's autocast setting, for extra model forwards made while computing weights."""
        amp = getattr(self, "_caller_amp", None)
        return torch.autocast(device_type=device_type, dtype=amp, enabled=amp is not None)

    def _combine(self, activations: Tensor, weights: Tensor, size: tuple[int, int], backend: str) -> tuple[Tensor, Tensor]:
        return combine(activations.detach(), weights, size, backend)

    def _get_weights(self, *, images: Tensor, activations: Tensor, logits: Tensor, targets: Tensor) -> Tensor:
        """Per-channel weights (B, C), float32 or wider (`accumulation`). Gradient methods call `self._gradients`."""
        raise NotImplementedError

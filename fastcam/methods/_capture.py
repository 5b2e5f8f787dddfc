"""Hooks that live for one call, in one thread (captum's way).

`capture(model, layers, ...)` registers a forward hook on each target layer and a pre-hook on the
model's convolutions when the call starts, and removes them all when it ends, so no hook ever outlives a
call (deepcopy, torch.save, `softcam.convert` and later forwards see a clean model). Every hook first
checks that it runs in the thread that installed it: forwards of the same model in other threads
(plain inference, other explainers) pass through untouched, and grad mode, which is thread-local, is only
ever switched in the calling thread.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


class Capture:
    """The target layers' outputs of one forward, in the order of `layers`.

    With `record_after=True` (gradient methods), the model is expected to run under `torch.no_grad()`:
    the first target layer to run switches recording on for the rest of the forward, and every target
    output joins the graph as a tensor `torch.autograd.grad` can differentiate against (a fresh leaf where
    nothing before it was recorded: captum's re-rooting, so frozen models and `no_grad` callers work).
    The backbone before the first target layer is never recorded, so its activations are not kept.
    The model continues on a copy of each output, so an in-place op after a target layer
    (`ReLU(inplace=True)`) cannot alter what was captured.
    """

    def __init__(self, names: Sequence[str], record_after: bool) -> None:
        self.names = tuple(names)
        self.record_after = record_after
        self.outputs: list[Tensor | None] = [None] * len(self.names)
        self.thread = threading.get_ident()
        self.first_conv_seen = False

    def on_layer(self, index: int, output: Any) -> Any:
        if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
            # blocks that return (hidden_states, extras...) (Hugging Face layers): the first is the output
            replaced = self.on_layer(index, output[0])
            return None if replaced is None else type(output)((replaced, *output[1:]))
        name = self.names[index]
        if not isinstance(output, Tensor):
            raise ValueError(
                f"target layer {name!r} must output a tensor (B, C, h, w), got {type(output).__name__}; "
                "pick a layer that returns one tensor"
            )
        if self.outputs[index] is not None:
            raise ValueError(f"target layer {name!r} runs more than once per forward; pick a module used once")
        if not self.record_after:
            self.outputs[index] = output.detach().clone()
            return None
        captured = output if output.requires_grad else output.detach().requires_grad_(True)
        self.outputs[index] = captured
        torch.set_grad_enabled(True)  # thread-local: affects this call's forward only
        return captured.clone()


def _check_first_conv(capture: Capture, name: str, module: nn.Module, inputs: tuple[Any, ...], images_channels: int) -> None:
    capture.first_conv_seen = True
    x = inputs[0] if inputs else None
    expected = getattr(module, "in_channels", None)
    if isinstance(x, Tensor) and x.dim() >= 2 and expected is not None and x.shape[1] != expected:
        raise ValueError(
            f"the model's first convolution {name!r} expects {expected} input channels but got {x.shape[1]} "
            f"(the images have {images_channels} channels)"
        )


@contextmanager
def capture(model: nn.Module, layers: Sequence[tuple[str, nn.Module]], *, record_after: bool,
            images_channels: int) -> Iterator[Capture]:
    """Install this call's hooks (target layers + the first-convolution channel check), remove them on exit."""
    state = Capture([name for name, _ in layers], record_after)
    handles: list[RemovableHandle] = []
    conv_handles: list[RemovableHandle] = []

    def layer_hook(index: int) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> Tensor | None:
            if threading.get_ident() != state.thread:
                return None  # another thread's forward of the same model
            return state.on_layer(index, output)
        return hook

    def conv_hook(name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            if threading.get_ident() != state.thread or state.first_conv_seen:
                return
            for handle in conv_handles:  # only the first convolution run matters: stop paying for the rest
                handle.remove()
            _check_first_conv(state, name, module, inputs, images_channels)
        return hook

    try:
        for index, (_, layer) in enumerate(layers):
            handles.append(layer.register_forward_hook(layer_hook(index)))
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.conv._ConvNd):
                conv_handles.append(module.register_forward_pre_hook(conv_hook(name)))
        yield state
    finally:
        for handle in (*handles, *conv_handles):
            handle.remove()

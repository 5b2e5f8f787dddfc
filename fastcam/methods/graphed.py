"""`fastcam.graphed`: one explainer call recorded as a CUDA graph for fixed shapes, then replayed.

A graph replays the whole call — forward, gradients, weights, combine (and CF-CAM's clustering) — as one
launch of the recorded kernels: no Python, no per-op launch overhead. It needs fixed shapes and a call
with no host reads: the call's checks (NaN/Inf, the clustering's capacity and convergence flags) are
deferred (`fastcam._deferred`) and read once after each replay; if any fails, that batch is explained
again eagerly, where the check raises its clear error or takes its fallback path, so a replay is never
silently wrong. Methods whose work depends on the data's values (Score-CAM's live channels) cannot be
captured: `graphed` then warns and explains eagerly.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from fastcam._deferred import deferred_host_checks
from fastcam._validation import TargetsLike, check_image_batch
from fastcam.explanation import Explanation
from fastcam.methods.base import Explainer


class GraphedExplainer(Explainer):
    """An explainer whose calls on images of one shape replay a CUDA graph (see the module docstring).

    Built by `graphed`; `explain(images)` takes images of the captured shape, dtype and device, and the
    targets given at capture (class indices fixed then, or None for the predicted class).
    """

    def __init__(self, explainer: Explainer, example_images: Tensor, targets: TargetsLike = None, *, warmup: int = 2) -> None:
        if not isinstance(explainer, Explainer):
            raise TypeError(f"graphed() takes a fastcam explainer, got {type(explainer).__name__}")
        if isinstance(explainer, GraphedExplainer):
            raise TypeError("the explainer is already graphed")
        example_images = check_image_batch(example_images)
        self.explainer = explainer
        self.targets = targets
        self.shape, self.dtype, self.device = tuple(example_images.shape), example_images.dtype, example_images.device
        self.name = explainer.name
        self.uses_gradients = explainer.uses_gradients
        self._graph: torch.cuda.CUDAGraph | None = None
        if example_images.device.type != "cuda":
            warnings.warn("CUDA graphs need CUDA tensors: explaining eagerly", RuntimeWarning, stacklevel=3)
            return
        try:
            self._capture(example_images, warmup)
        except Exception as exc:  # noqa: BLE001 - any capture failure: the eager path is always right
            self._graph = None
            torch.cuda.synchronize(self.device)
            warnings.warn(f"{type(explainer).__name__} cannot be captured as a CUDA graph ({type(exc).__name__}: "
                          f"{exc}); explaining eagerly", RuntimeWarning, stacklevel=3)

    @property
    def captured(self) -> bool:
        """Whether calls replay a graph (False: every call runs eagerly)."""
        return self._graph is not None

    def _capture(self, example: Tensor, warmup: int) -> None:
        static = example.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up off the default stream: lazy inits, autotuning, allocator
            for _ in range(warmup):
                with deferred_host_checks():
                    self.explainer.explain(static, self.targets)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with deferred_host_checks() as flags, torch.cuda.graph(graph):
            out = self.explainer.explain(static, self.targets)
        self._static, self._out, self._flags, self._graph = static, out, flags, graph

    def explain(self, images: Tensor, targets: TargetsLike = None) -> Explanation:
        if self._closed:
            raise RuntimeError("GraphedExplainer was closed; create a new one")
        if targets is not None:
            raise ValueError("a graphed explainer explains the targets fixed at capture: pass them to graphed()")
        images = check_image_batch(images)
        if self._graph is None:
            return self.explainer.explain(images, self.targets)
        if (tuple(images.shape), images.dtype, images.device) != (self.shape, self.dtype, self.device):
            raise ValueError(f"this graph was captured for images {self.shape} {self.dtype} on {self.device}, "
                             f"got {tuple(images.shape)} {images.dtype} on {images.device}: graph another explainer")
        self._static.copy_(images)
        self._graph.replay()
        if self._flags and not bool(torch.stack([f.all() for f in self._flags]).all()):  # the replay's one sync
            return self.explainer.explain(images, self.targets)  # a check failed: eagerly, with its error/fallback
        return Explanation(*(t.clone() for t in (self._out.maps, self._out.lowres, self._out.logits, self._out.targets)))

    def close(self) -> None:
        self._graph = None
        super().close()


def graphed(explainer: Any, example_images: Tensor, targets: TargetsLike = None, *, warmup: int = 2) -> GraphedExplainer:
    """Record one call of `explainer` on images shaped like `example_images` as a CUDA graph.

    >>> cam = fastcam.graphed(fastcam.GradCAM(model, "layer4"), images)   # captured once
    >>> maps = cam(next_batch)                                             # replayed: same shape/dtype

    Falls back, with a warning, to eager calls on CPU tensors and for explainers that cannot be captured
    (data-dependent work such as Score-CAM's). Each replay reads its deferred checks once; a failing
    batch is explained again eagerly.
    """
    return GraphedExplainer(explainer, example_images, targets, warmup=warmup)

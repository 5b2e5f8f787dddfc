r"""Ablation-CAM (Desai & Ramaswamy, WACV 2020): channel ablations packed into forwards of `batch_size`,
run from the target layer on.

A channel's weight is the relative drop of the target score when that channel of the target layer is
ablated (set to `ablation_value`, 0 by default, the paper's choice):

$$ w_c = \frac{y - y_c}{|y|}, \qquad L = \mathrm{ReLU}\Big(\sum_c w_c A_c\Big) $$

with $y$ the target's score (a logit for a class target, as pytorch-grad-cam and the paper) and $y_c$ the
same score with channel $c$ of $A$ ablated. Where $y = 0$ exactly, $w_c = y - y_c$ (the same map up to a
positive factor, instead of an infinity). The paper and pytorch-grad-cam divide by $y$ itself, which is
the same for $y > 0$ but flips every weight where $y < 0$ (an unlikely class's logit): a channel whose
ablation lowers the score would count against the target. Dividing by $|y|$ keeps the sign of the drop,
so a channel supports the target exactly when ablating it lowers the target's score, whatever the sign of
the score; a target scored as the negative of another ("evidence against",
`fastcam.targets.BinaryTarget(positive=False)`, score $-z$) gets the other's weights negated. The B·C ablated copies of a batch are packed into forwards of
`batch_size` rows across images and channels.

**Only the layers after the target run again.** The model is traced once with `torch.fx` (the target
layer kept as one call) and split at the target layer's output: the *tail* recomputes the output from
that tensor and from every other value that crosses the cut (a residual branch that skips over the
target layer, the input itself if a later layer reads it), which the graph names explicitly, so nothing
is assumed about the layers before the cut. When no other value crosses (a layer of the main path, e.g.
ResNet's `layer4`, VGG's `features.29`), the ablations cost only tail forwards; otherwise the values that
cross are computed once per call by the graph's *head* (one extra partial forward of the batch, not one
per chunk). Before use, the tail is checked to reproduce the call's own scores from the unablated
activations; a model that does not trace (data-dependent control flow, most Hugging Face models), a
target layer returning a tuple, values crossing the cut that are not per-image tensors, or a failed check
(with a warning) fall back to full forwards of the images with a forward hook that replaces the target
layer's output by the ablated copies (pytorch-grad-cam's approach: correct for any model, but the
backbone runs once per chunk).

Tracing and threads: `torch.fx` patches `torch.nn.Module.__call__` and `__getattr__` process-wide while
it traces (once per explainer and model structure, a few tens of ms; later calls reuse the split). The
tracer (`fastcam._fx.LeafTracer`) passes other threads' module calls and parameter reads through as plain
execution, so their inference runs as usual; another `torch.fx` trace in another thread at that moment
would still meet the patch: pass `partial_forward=False` (no tracing, full forwards) where that happens.

Differences from pytorch-grad-cam: it ablates to 0 when the layer's minimum is 0 and otherwise to
"minimum − 1e7", decreasing further for every row of a chunk (a side effect of recomputing the minimum
on the partly ablated batch); fastcam uses one `ablation_value` for every row. pytorch-grad-cam loops over
images and runs the layers before the target for every chunk.
"""
from __future__ import annotations

import operator
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from fastcam._fx import LeafTracer
from fastcam.methods._progress import check_progress, chunk_starts
from fastcam.methods.base import BaseCAM, CallContext, OutputFn, ReshapeTransform, TargetLayers
from fastcam.ops import accumulation, check_int, check_real

_TRACE_LOCK = threading.Lock()
Run = Callable[[Tensor, Tensor], Any]


def _closure(roots: list[fx.Node], stop: set[fx.Node]) -> set[fx.Node]:
    """The nodes `roots` need, walking inputs backwards and not past `stop`."""
    seen: set[fx.Node] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        if node not in stop:
            todo.extend(node.all_input_nodes)
    return seen


def _copy(model: nn.Module, order: list[fx.Node], keep: set[fx.Node], inputs: list[fx.Node],
          outputs: Callable[[dict[fx.Node, fx.Node]], Any] | None) -> fx.GraphModule:
    """A GraphModule over `model`'s submodules: placeholders for `inputs`, then the `keep` nodes in order."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for i, node in enumerate(inputs):
        env[node] = graph.placeholder(f"cut_{i}")
    for node in order:
        if node in keep and node not in env and (node.op != "output" or outputs is None):
            env[node] = graph.node_copy(node, lambda a: env[a])
    if outputs is not None:
        graph.output(outputs(env))
    return fx.GraphModule(model, graph)


def split_at(model: nn.Module, layer: nn.Module) -> tuple[fx.GraphModule, fx.GraphModule | None] | None:
    """(tail, head) of `model` cut at `layer`'s output, or None when the model cannot be split there.

    tail(layer_output, *crossing) -> the model's output; head(images) -> the tuple `crossing` of the other
    values that cross the cut (None when there are none).
    """
    try:
        with _TRACE_LOCK:
            graph = LeafTracer(layer).trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure means: use full forwards
        return None
    order = list(graph.nodes)
    cut = [n for n in order if n.op == "call_module" and model.get_submodule(str(n.target)) is layer]
    if len(cut) != 1 or any(u.op == "call_function" and u.target is operator.getitem for u in cut[0].users):
        return None  # called several times, or returns a tuple
    target = cut[0]
    after, from_input = {target}, set()
    for node in order:
        if any(a in after for a in node.all_input_nodes):
            after.add(node)
        if node.op == "placeholder" or any(a in from_input for a in node.all_input_nodes):
            from_input.add(node)
    output = order[-1]
    if output.op != "output" or output not in after:
        return None  # the output does not depend on the layer
    # values computed from the input before the cut that the part after it reads
    crossing = [n for n in order if n not in after and n in from_input and any(u in after and u is not target for u in n.users)]
    tail = _copy(model, order, _closure([output], {target, *crossing}), [target, *crossing], None)
    head = None
    if crossing:
        head = _copy(model, order, _closure(crossing, set()), [], lambda env: tuple(env[n] for n in crossing))
    return tail, head


class AblationCAM(BaseCAM):
    """Ablation-CAM: a channel's weight is the share of the target score lost when the channel is ablated.

    From [Desai & Ramaswamy, Ablation-CAM, WACV 2020](https://openaccess.thecvf.com/content_WACV_2020/html/Desai_Ablation-CAM_Visual_Explanations_for_Deep_Convolutional_Network_via_Gradient-free_Localization_WACV_2020_paper.html).
    See the module docstring for the maths and the partial forwards.

    Args:
        batch_size: ablated copies per forward, packed across the images and channels of the batch.
        ablation_value: the value an ablated channel takes (0: the paper's; pytorch-grad-cam uses a very
            negative value for layers whose minimum is not 0).
        partial_forward: run only the layers after the target for the ablated copies (torch.fx split,
            falling back to full forwards where the model does not split); False: always full forwards.
        progress: a tqdm progress bar over the ablated forwards of each call (for long in-memory calls);
            off by default.

    The other arguments (model, target_layer, backend, reshape_transform, output_fn, allow_train_mode,
    aug_smooth, eigen_smooth) are `BaseCAM`'s.

    Example:
        >>> with fastcam.AblationCAM(model, "layer4", batch_size=64) as cam:
        ...     maps = cam(images, targets=3)  # class 3 for every image
    """

    name = "ablationcam"
    weights_run_model = True

    def __init__(
        self,
        model: nn.Module,
        target_layer: TargetLayers,
        *,
        batch_size: int = 32,
        ablation_value: float = 0.0,
        partial_forward: bool = True,
        progress: bool = False,
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
        self.progress = check_progress(progress)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.ablation_value = check_real("ablation_value", ablation_value, low=-float("inf"), low_inclusive=True)
        if not isinstance(partial_forward, bool):
            raise TypeError(f"partial_forward must be a bool, got {type(partial_forward).__name__}")
        self.partial_forward = partial_forward
        # layer name -> (the model's module identities when traced, the split or None): derived from the
        # model's structure, not from any call; retraced when a submodule is replaced
        self._splits: dict[str, tuple[tuple[int, ...], Any]] = {}

    def _split(self, name: str, layer: nn.Module) -> tuple[fx.GraphModule, fx.GraphModule | None] | None:
        key = tuple(id(m) for m in self.model.modules())
        cached = self._splits.get(name)
        if cached is None or cached[0] != key:
            cached = (key, split_at(self.model, layer))
            self._splits[name] = cached
        return cached[1]

    def _full_forward(self, ctx: CallContext, layer: nn.Module) -> Run:
        """Rows of the ablated layer output -> model output, by full forwards with a replacing hook."""
        thread = threading.get_ident()

        def run(rows: Tensor, index: Tensor) -> Any:
            def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
                if threading.get_ident() != thread:
                    return None  # another thread's forward of the same model
                if isinstance(output, (tuple, list)):
                    return type(output)((rows, *output[1:]))
                return rows

            handle = layer.register_forward_hook(hook)
            try:
                return ctx.model(ctx.images.index_select(0, index))
            finally:
                handle.remove()

        return run

    def _partial_forward(self, ctx: CallContext, layer: nn.Module, raw: Tensor, scores: Tensor) -> Run | None:
        """Rows of the ablated layer output -> model output through the tail only, or None (full forwards)."""
        split = self._split(ctx.layer_name, layer) if self.partial_forward else None
        if split is None:
            return None
        tail, head = split
        crossing: tuple[Any, ...] = ()
        if head is not None:
            with ctx.model_autocast():
                crossing = tuple(head(ctx.images))
        rows = raw.shape[0]
        if not all(isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == rows for v in crossing):
            return None  # values that cannot be taken per image (shapes, flags): full forwards

        def run(layer_rows: Tensor, index: Tensor) -> Any:
            return tail(layer_rows, *(v.index_select(0, index) for v in crossing))

        with ctx.model_autocast():  # a copy: the tail may start with an in-place op (ReLU(inplace=True))
            again = accumulation(ctx.target.score(ctx.view(run(raw.clone(), torch.arange(rows, device=raw.device)))))
        if not torch.allclose(again, scores, rtol=1e-3, atol=1e-4 * float(scores.abs().max().clamp_min(1))):
            warnings.warn(
                f"Ablation-CAM: the model split at {ctx.layer_name!r} by torch.fx does not reproduce the model's "
                "scores; using full forwards", RuntimeWarning, stacklevel=4,
            )
            return None
        return run

    def _channel_positions(self, ctx: CallContext, raw: Tensor) -> Tensor:
        """(C, P) int64: where, in one image's flattened layer output, each channel of the activations
        lies (through `reshape_transform`, which must only rearrange elements)."""
        index = torch.arange(raw[:1].numel(), dtype=torch.float64, device=raw.device).view_as(raw[:1])
        laid = self._layout(index, ctx.layer_name, tuple(ctx.images.shape[2:]))
        positions = laid[0].flatten(1).round().long().clamp(0, index.numel() - 1)
        if positions.shape[0] != ctx.activations.shape[1] or not torch.equal(positions.double(), laid[0].flatten(1)) or not torch.equal(
            raw[:1].flatten()[positions.flatten()], ctx.activations[:1].flatten().to(raw.dtype)
        ):
            raise ValueError(
                f"Ablation-CAM ablates channels of layer {ctx.layer_name!r} through reshape_transform, which must "
                "only rearrange the layer output's elements (reshape, permute, slice)"
            )
        return positions

    @torch.no_grad()
    def _get_weights(self, ctx: CallContext) -> Tensor:
        layer = dict(self.layers)[ctx.layer_name]
        raw: Tensor = ctx.extras["layer_output"]
        rows, channels = ctx.activations.shape[:2]
        scores = accumulation(ctx.target.score(ctx.output))  # y, per row
        positions = self._channel_positions(ctx, raw)
        run = self._partial_forward(ctx, layer, raw, scores) or self._full_forward(ctx, layer)
        ablated = torch.empty(rows * channels, dtype=scores.dtype, device=scores.device)
        pairs = rows * channels
        for start in chunk_starts(pairs, self.batch_size, show=self.progress, desc="AblationCAM"):
            pair = torch.arange(start, min(start + self.batch_size, pairs), device=raw.device)
            index, channel = pair // channels, pair % channels
            layer_rows = raw.index_select(0, index).flatten(1)  # a fresh copy: ablated in place
            layer_rows.scatter_(1, positions.index_select(0, channel), self.ablation_value)
            with ctx.model_autocast():
                out = run(layer_rows.view(-1, *raw.shape[1:]), index)
            ablated[start : start + pair.numel()] = accumulation(ctx.target.select(index).score(ctx.view(out)))
        y = scores.unsqueeze(1)
        drop = y - ablated.view(rows, channels)
        # relative to |y|: dividing by a negative y (pytorch-grad-cam's y) would flip every weight
        return torch.where(y == 0, drop, drop / torch.where(y == 0, torch.ones_like(y), y.abs()))

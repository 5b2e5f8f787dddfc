r"""The pooled-linear check: when is Grad-CAM a forward-only computation?

Let $A$ (B, C, h, w) be the target layer's output and let the model end in

$$ y = W\,\mathrm{pool}\big(r(A)\big) + b, \qquad \mathrm{pool}(X)_c = \frac{1}{hw}\sum_{ij} X_{cij}, $$

with $r$ either the identity or a ReLU (DenseNet applies `F.relu` to its features before pooling), then
flatten / dropout (identities in eval mode) and one `nn.Linear` $(W, b)$. The gradient of the target
score $y_t$ is

$$ \frac{\partial y_t}{\partial A_{cij}} = \frac{W_{tc}}{hw}\, m_{cij}, \qquad
   m_{cij} = \begin{cases} 1[A_{cij} > 0] & r = \mathrm{ReLU} \\ 1 & r = \mathrm{id} \end{cases} $$

(autograd's ReLU backward passes the gradient where the output is positive), so Grad-CAM's weights,
the spatial means of that gradient, are

$$ w_c = \frac{W_{tc}}{hw}\cdot\frac{1}{hw}\sum_{ij} m_{cij}, $$

which is $W_{tc}/hw$ (CAM, up to the positive factor $1/hw$) without the ReLU. Both need no backward.
Anything else after the target layer (a second Linear behind an activation, a BatchNorm, more
convolutions, a 7×7 pooling) breaks this identity, and `pooled_linear_head` refuses it by name.

The structure is read with `torch.fx` (the target layer kept as one leaf), so functional ops (`F.relu`,
`torch.flatten`, `x.mean((2, 3))`) are seen, not only modules. A model fx cannot trace (Hugging Face
models: Python control flow on input shapes, `ModelOutput`s) is read from its `torch.export` graph
instead, when example images are given: the ATen operations after the target layer's output (found by
the modules each operation ran in) must form the same chain; the first that does not is named.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from fastcam._fx import LeafTracer
from fastcam.errors import NotPooledLinearError  # defined with every error; importable from here as before
from fastcam.models.loading import LogitsOnly

__all__ = ["NotPooledLinearError", "PooledLinearHead", "pooled_linear_head"]

_RELU_FUNCTIONS = (torch.relu, torch.relu_, F.relu)
_MEAN_FUNCTIONS = (torch.mean,)
_FLATTEN_FUNCTIONS = (torch.flatten, torch.squeeze)
_IDENTITY_MODULES = (nn.Dropout, nn.Dropout2d, nn.Identity)
_RESHAPE_METHODS = ("flatten", "view", "reshape", "squeeze")
_SPATIAL_DIMS = ({2, 3}, {-2, -1})


@dataclass(frozen=True)
class PooledLinearHead:
    """A verified pooled-linear head.

    Attributes:
        trunk: images -> the target layer's output (the model's fx graph cut after the target layer; it
            shares the model's parameters).
        linear: the classifier layer $(W, b)$.
        relu: whether a ReLU runs between the target layer and the pooling.
        steps: what runs after the target layer, in words (for messages and the export record).
    """

    trunk: fx.GraphModule
    linear: nn.Linear
    relu: bool
    steps: tuple[str, ...]


def _is_shape_query(node: fx.Node) -> bool:
    """`x.size(0)`, `x.shape`, `x.dim()`: read metadata, carry no values on."""
    if node.op == "call_method" and node.target in ("size", "dim"):
        return True
    if node.op == "call_function" and getattr(node.target, "__name__", "").startswith("sym_"):
        return True  # an exported graph's aten.sym_size / sym_numel
    return node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",)


def _other_nodes(node: fx.Node, current: fx.Node) -> list[fx.Node]:
    """Graph values that `node` reads besides `current`, shape queries excluded (a skip connection, say)."""
    found: list[fx.Node] = []

    def visit(arg: Any) -> None:
        if isinstance(arg, fx.Node):
            if arg is not current and not _is_shape_query(arg) and arg.op != "get_attr":
                found.append(arg)
        elif isinstance(arg, (list, tuple)):
            for a in arg:
                visit(a)
        elif isinstance(arg, dict):
            for a in arg.values():
                visit(a)

    visit(node.args)
    visit(node.kwargs)
    return found


def _dims(value: Any) -> set[int] | None:
    if isinstance(value, int):
        return {value}
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return set(value)
    return None


def _global_pool_size(value: Any) -> bool:
    """1 or (1, 1): AdaptiveAvgPool2d's output size of a global average pool."""
    return value == 1 or (isinstance(value, (list, tuple)) and tuple(value) == (1, 1))


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{type(modules[str(node.target)]).__name__} {str(node.target)!r}"
    if node.op == "call_function":
        return f"{getattr(node.target, '__name__', str(node.target))}()"
    if node.op == "call_method":
        return f".{node.target}()"
    if node.op == "output":
        return "the model's output"
    return f"{node.op} {node.target}"


def _classify(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str | None, str]:
    """(kind, words): kind in relu | pool | partial pool | flatten | identity | linear, or None (anything else)."""
    words = _describe(node, modules)
    if node.op == "call_module":
        module = modules[str(node.target)]
        if type(module) is nn.ReLU:
            return "relu", "ReLU"
        if type(module) is nn.AdaptiveAvgPool2d:
            if _global_pool_size(module.output_size):
                return "pool", "global average pool"
            return "partial pool", f"{words} with output_size={module.output_size}, not a global average pool"
        if type(module) is nn.Flatten:
            return ("flatten", "flatten") if module.start_dim == 1 and module.end_dim == -1 else (None, words)
        if isinstance(module, _IDENTITY_MODULES):
            return "identity", type(module).__name__
        if type(module) is nn.Linear:
            return "linear", f"Linear {str(node.target)!r}"
        return None, words
    if node.op == "call_function":
        target = node.target
        if target in _RELU_FUNCTIONS:
            return "relu", "ReLU"
        if target is F.adaptive_avg_pool2d:
            if _global_pool_size(_arg(node, 1, "output_size")):
                return "pool", "global average pool"
            return "partial pool", f"adaptive_avg_pool2d(output_size={_arg(node, 1, 'output_size')}), not a global average pool"
        if target in _MEAN_FUNCTIONS:
            return ("pool", "global average pool") if _dims(_arg(node, 1, "dim")) in _SPATIAL_DIMS else (None, words)
        if target in _FLATTEN_FUNCTIONS:
            return "flatten", "flatten"
        if target is F.dropout:
            # F.dropout(x, p, training=self.training) is traced with the eval flag: False is an identity
            return ("identity", "dropout") if _arg(node, 2, "training", True) is False else (None, f"{words} in training mode")
        return None, words
    if node.op == "call_method":
        if node.target in ("relu", "relu_"):
            return "relu", "ReLU"
        if node.target == "mean":
            return ("pool", "global average pool") if _dims(_arg(node, 1, "dim")) in _SPATIAL_DIMS else (None, words)
        if node.target in _RESHAPE_METHODS:
            return "flatten", "flatten"
    if node.op == "call_function" and node.target is operator.getitem:
        return None, words
    return None, words


def _trace(model: nn.Module, layer: nn.Module) -> fx.GraphModule:
    try:
        return fx.GraphModule(model, LeafTracer(layer).trace(model))
    except Exception as exc:  # fx raises many types; any of them means "cannot verify"
        raise NotPooledLinearError(
            f"cannot trace {type(model).__name__} with torch.fx to verify what runs after the target layer "
            f"({type(exc).__name__}: {exc}); export needs a model fx can trace"
        ) from exc


def pooled_linear_head(model: nn.Module, layer_name: str, layer: nn.Module,
                       example_images: Tensor | None = None) -> PooledLinearHead:
    """Verify that `model` after `layer` is "[ReLU] → global average pool → [flatten, dropout] → Linear"
    and return the trunk (images -> the layer's output) and the head; otherwise a `NotPooledLinearError`
    (a ValueError) that names what is not pooled-linear.

    The output of the layer must reach the model's output through that chain only: a branch (a skip
    connection, a second use) or any other operation is refused. A model `torch.fx` cannot trace is read
    from its `torch.export` graph on `example_images` (without them it is refused with fx's reason).
    """
    try:
        graph_module = _trace(model, layer)
    except NotPooledLinearError as fx_error:
        if example_images is None:
            raise
        return _exported_head(model, layer_name, layer, example_images, fx_error)
    graph = graph_module.graph
    modules = dict(graph_module.named_modules())
    calls = [n for n in graph.nodes if n.op == "call_module" and modules.get(str(n.target)) is layer]
    if len(calls) != 1:
        raise NotPooledLinearError(f"target layer {layer_name!r} runs {len(calls)} times in the model's forward, not once")
    linear, relu, steps = _walk_head(calls[0], layer_name, lambda n: _classify(n, modules),
                                     lambda n: _describe(n, modules), lambda n: modules[str(n.target)],
                                     lambda n: _rest_of_chain(n, modules))
    return PooledLinearHead(trunk=_cut_after(graph_module, calls[0]), linear=linear, relu=relu, steps=steps)


def _walk_head(start: fx.Node, layer_name: str, classify: Callable[[fx.Node], tuple[str | None, str]],
               describe: Callable[[fx.Node], str], linear_of: Callable[[fx.Node], nn.Module],
               rest_of: Callable[[fx.Node], list[str]]) -> tuple[nn.Linear, bool, tuple[str, ...]]:
    """Follow the target layer's output (`start`) to the model's output through the pooled-linear chain:
    (the Linear, whether a ReLU runs before the pooling, the chain in words); any other step is refused."""
    head_hint = "Grad-CAM equals a forward-only CAM only for [ReLU] → global average pool → [flatten, dropout] → one Linear"
    current, phase, relu, linear, steps = start, "features", False, None, []
    while True:
        users = [u for u in current.users if not _is_shape_query(u)]
        if len(users) != 1:
            names = ", ".join(describe(u) for u in users) or "nothing"
            where = (f"target layer {layer_name!r} is not the last feature map" if phase == "features"
                     else f"the head after {layer_name!r} branches")
            raise NotPooledLinearError(f"{where}: its output feeds {len(users)} operations ({names}); {head_hint}")
        node = users[0]
        if node.op == "output":
            value = node.args[0]
            if isinstance(value, (tuple, list)) and len(value) == 1:
                value = value[0]  # an exported graph's outputs are a flat tuple
            if phase != "linear" or value is not current:
                raise NotPooledLinearError(
                    f"the model's output after {layer_name!r} is not one Linear's output "
                    f"(found {' → '.join(steps) or 'nothing'}; tuples and dicts are not exported); {head_hint}")
            break
        kind, words = classify(node)
        others = _other_nodes(node, current)
        if kind is not None and others:
            kind, words = None, f"{words} also reading {', '.join(describe(o) for o in others)}"
        chain = " → ".join([*steps, words])
        if kind == "partial pool":
            raise NotPooledLinearError(f"the head after {layer_name!r} is not pooled-linear: {chain}; {head_hint}")
        if phase == "features" and kind not in ("relu", "identity", "pool"):
            raise NotPooledLinearError(
                f"target layer {layer_name!r} is not the last feature map: {words} runs after it, before any global "
                "average pooling; target the layer whose output is pooled (e.g. 'layer4' of a ResNet, 'features' of "
                f"a DenseNet or EfficientNet); {head_hint}")
        if phase == "pooled" and kind not in ("flatten", "identity", "linear"):
            raise NotPooledLinearError(f"the head after {layer_name!r} is not pooled-linear: {chain}; {head_hint}")
        if phase == "linear":
            rest = rest_of(node)
            mlp = " (an MLP after pooling: Linear → activation → Linear is not linear)" if any(
                w.startswith("Linear") for w in rest[1:]) else ""
            raise NotPooledLinearError(
                f"the head after {layer_name!r} is not linear: {' → '.join([*steps, *rest])}{mlp}; {head_hint}")
        if kind == "relu":
            relu = True
        elif kind == "pool":
            phase = "pooled"
        elif kind == "linear":
            phase, linear = "linear", linear_of(node)
        steps.append(words)
        current = node
    assert isinstance(linear, nn.Linear)
    return linear, relu, tuple(steps)


def _rest_of_chain(node: fx.Node, modules: dict[str, nn.Module] | None = None, limit: int = 16) -> list[str]:
    """`node` and what follows it (first users) up to the output, in words: for the error message (an
    exported graph's ATen nodes without `modules`)."""
    words: list[str] = []
    while node.op != "output" and len(words) < limit:
        words.append((_classify(node, modules) if modules is not None else _aten_classify(node))[1])
        users = [u for u in node.users if not _is_shape_query(u)]
        if not users:
            break
        node = users[0]
    return words


def _cut_after(graph_module: fx.GraphModule, node: fx.Node) -> fx.GraphModule:
    """The fx graph up to `node`, returning its value (the rest, now dead, removed)."""
    trunk = fx.Graph()
    values: dict[fx.Node, fx.Node] = {}
    trunk.graph_copy(graph_module.graph, values)
    trunk.output(values[node])
    module = fx.GraphModule(graph_module, trunk)
    module.graph.eliminate_dead_code()  # the head's nodes: their modules are dropped with them
    module.recompile()
    return module


# ------------------------------------------------------------------------------- torch.export graphs
#: ATen operations (their packet names) by what they are in a pooled-linear head
_ATEN_RELU = ("relu", "relu_")
_ATEN_RESHAPE = ("flatten", "view", "reshape", "_unsafe_view", "squeeze")
_ATEN_IDENTITY = ("clone", "contiguous", "alias", "detach", "_assert_tensor_metadata")


def _module_path(node: fx.Node) -> tuple[str, str] | None:
    """(qualified name, class name) of the innermost module an exported node ran in, below the wrapper."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path, kind = list(stack.values())[-1]
    path = str(path).removeprefix("L['self'].")
    path = "" if path == "net" else path.removeprefix("net.")  # `LogitsOnly.net`: the model itself
    return path, getattr(kind, "__name__", str(kind).rpartition(".")[2].strip("'>"))


def _aten_describe(node: fx.Node) -> str:
    if node.op != "call_function":
        return "the model's output" if node.op == "output" else f"{node.op} {node.target}"
    where = _module_path(node)
    inside = f" in {where[1]} {where[0]!r}" if where and where[0] else ""
    return f"{node.target}{inside}"


def _aten_classify(node: fx.Node) -> tuple[str | None, str]:
    """`_classify` for an exported graph's ATen nodes."""
    words = _aten_describe(node)
    if node.op != "call_function":
        return None, words
    packet = getattr(getattr(node.target, "overloadpacket", None), "__name__", "")
    if packet in _ATEN_RELU:
        return "relu", "ReLU"
    if packet == "adaptive_avg_pool2d":
        if _global_pool_size(_arg(node, 1, "output_size")):
            return "pool", "global average pool"
        return "partial pool", f"adaptive_avg_pool2d(output_size={_arg(node, 1, 'output_size')}), not a global average pool"
    if packet == "mean":
        return ("pool", "global average pool") if _dims(_arg(node, 1, "dim")) in _SPATIAL_DIMS else (None, words)
    if packet in _ATEN_RESHAPE:
        return "flatten", "flatten"
    if packet in _ATEN_IDENTITY:
        return "identity", packet
    if packet == "dropout":
        return ("identity", "dropout") if _arg(node, 2, "train", True) is False else (None, f"{words} in training mode")
    if packet == "linear":
        return "linear", f"Linear {(_module_path(node) or ('?', ''))[0]!r}"
    return None, words


def _exported_head(model: nn.Module, layer_name: str, layer: nn.Module, example_images: Tensor,
                   fx_error: NotPooledLinearError) -> PooledLinearHead:
    """`pooled_linear_head` read from the model's `torch.export` graph (batch and spatial sizes dynamic
    where the model allows): the target layer's output is the value its operations hand outside it."""
    qualified = next((n for n, m in model.named_modules() if m is layer), layer_name)
    dims = {0: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
    try:
        program = torch.export.export(LogitsOnly(model).eval(), (example_images,), dynamic_shapes=({**dims},),
                                      strict=False)
    except Exception as exc:  # noqa: BLE001 - export raises many kinds; any means "cannot verify"
        raise NotPooledLinearError(f"{fx_error}; torch.export cannot trace it either ({type(exc).__name__}: "
                                   f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from exc
    graph_module = program.module()

    def inside(node: fx.Node) -> bool:
        where = _module_path(node)
        return where is not None and (where[0] == qualified or where[0].startswith(qualified + "."))

    nodes = [n for n in graph_module.graph.nodes if n.op == "call_function"]
    handed_out = [n for n in nodes if inside(n) and any(not inside(u) and not _is_shape_query(u) for u in n.users)]
    if len(handed_out) != 1:
        raise NotPooledLinearError(
            f"target layer {layer_name!r} hands {len(handed_out)} values to the rest of the model in its torch.export "
            f"graph ({', '.join(_aten_describe(n) for n in handed_out) or 'none'}), not one feature map")

    def linear_of(node: fx.Node) -> nn.Module:
        where = _module_path(node)
        module = model.get_submodule(where[0]) if where else None
        if type(module) is not nn.Linear:
            raise NotPooledLinearError(f"the classifier {_aten_describe(node)} is not an nn.Linear module")
        return module

    linear, relu, steps = _walk_head(handed_out[0], layer_name, _aten_classify, _aten_describe, linear_of,
                                     lambda n: _rest_of_chain(n))
    return PooledLinearHead(trunk=_cut_after(graph_module, handed_out[0]), linear=linear, relu=relu, steps=steps)

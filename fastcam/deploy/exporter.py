r"""`fastcam.deploy.export`: an explainer as one forward-only graph file (ONNX or `torch.export`).

Exportable explainers are the forward-only ones:

- `fastcam.SoftCAM(net)`: the evidence maps are part of the network's forward;
- `fastcam.GradCAM(model, layer)` when everything after `layer` is "[ReLU] → global average pool →
  [flatten, dropout] → Linear" (verified with `torch.fx`, see `fastcam.deploy.heads`): Grad-CAM's weights are
  then the Linear's row of the target class over $hw$ (behind a ReLU, times each channel's fraction of
  positive activations), no backward needed.

Grad-CAM++, Score-CAM and CF-CAM are refused: they need the backward pass, one forward per channel mask,
or per-image clustering.

Before anything is written, the graph is checked against the autograd explainer on the example images
(logits, maps, lowres, and SoftCAM's evidence, to 1e-5 relative and absolute in float32), and so is the
exported artefact itself (through ONNX Runtime when it is installed, through the exported program
otherwise). A model that fails either check is refused, never exported wrong.

The graph file:

| input | shape | dtype |
| --- | --- | --- |
| `images` | (B, C, H, W), B, H and W dynamic | float32 (or the `dtype` variant) |
| `target` (targets="given" only) | (B,) | int64, values in [0, K) (not checked inside the graph) |

| output | shape | dtype |
| --- | --- | --- |
| `logits` | (B, K) | float32 |
| `maps` | (B, H, W) in [0, 1], the input's own size | float32 |
| `lowres` | (B, h, w), the target layer's size | float32 |
| `evidence` (SoftCAM only) | (B, K, h, w) | float32 |

ONNX: opset 20 (`OPSET`), written by the torch.export-based exporter (`dynamo=True`, PyTorch's default
since 2.9; it needs the `onnx` and `onnxscript` packages, all local, no download). The TorchScript exporter
(`dynamo=False`) is deprecated and traces shapes as constants, so it could not upsample to a dynamic input
size. Variants: "float32" (the reference), "float16" (ONNX Runtime's CPU provider runs it, casting the
nodes it has no half kernel for to float32), "bfloat16" only for `format="torch.export"` (ONNX's
convolution has no bfloat16 type). Half variants are checked against the float32 graph with a loose
tolerance (`HALF_TOLERANCE`), their error is reported in `ExportInfo.max_error`.
"""
from __future__ import annotations

import copy
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from fastcam._validation import check_image_batch, first_training_module
from fastcam.deploy.graphs import PooledCAMGraph, SoftCAMGraph
from fastcam.deploy.heads import pooled_linear_head
from fastcam.deploy.options import DTYPE_NAMES, FORMATS, NOT_EXPORTABLE, OPSET, TARGETS
from fastcam.methods.base import Explainer
from fastcam.methods.gradcam import GradCAM
from fastcam.methods.registry import display_name
from fastcam.methods.softcam import SoftCAM

__all__ = ["DTYPES", "HALF_TOLERANCE", "TOLERANCE", "ExportInfo", "export"]

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}
#: float32 check against the autograd explainer: |exported - explainer| <= TOLERANCE * (1 + |explainer|)
TOLERANCE = 1e-5
#: half variants against the float32 graph, relative to each output's scale (a sanity check, not parity)
HALF_TOLERANCE: dict[str, float] = {"float16": 2e-2, "bfloat16": 1e-1}


@dataclass(frozen=True)
class ExportInfo:
    """What `export` wrote.

    Attributes:
        path: the file.
        format: "onnx" or "torch.export".
        method: "softcam" or "gradcam".
        targets: "predicted" (argmax in the graph) or "given" (a `target` input).
        dtype: the variant's dtype name (inputs and weights; outputs are float32).
        opset: the ONNX opset (None for torch.export).
        inputs / outputs: the graph's tensor names, in order.
        dynamic: input dims that stay symbolic, with the range the exporter recorded ((min, max), max None =
            unbounded); ONNX axes carry these names.
        head: what runs after Grad-CAM's target layer (empty for SoftCAM).
        max_error: largest deviation per output of the exported artefact from its reference on the example,
            relative to 1 + |ref|: the autograd explainer (float32, model on the CPU), the float32 graph on the
            CPU (model on a GPU; the graph itself matched the explainer on the GPU), or the float32 graph
            (half variants, scaled by each output's range).
        checked_with: what ran the artefact for that check ("onnxruntime" or "torch.export").
    """

    path: Path
    format: str
    method: str
    targets: str
    dtype: str
    opset: int | None
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic: dict[str, tuple[int, int | None]]
    head: tuple[str, ...] = ()
    max_error: dict[str, float] = field(default_factory=dict)
    checked_with: str = ""

    def record(self) -> dict[str, Any]:
        """JSON-able description, stored in the file's metadata (ONNX metadata_props / extra file)."""
        import fastcam

        out = asdict(self)
        out["path"] = self.path.name
        out["fastcam"] = fastcam.__version__
        return out


# ------------------------------------------------------------------------------------------ arguments
def _choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return str(value)


def _dtype_name(dtype: str | torch.dtype) -> str:
    if isinstance(dtype, torch.dtype):
        names = {v: k for k, v in DTYPES.items()}
        if dtype not in names:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype}")
        return names[dtype]
    return _choice("dtype", dtype, tuple(DTYPES))


def _graph(explainer: Explainer, given_targets: bool, images: Tensor) -> tuple[nn.Module, str, tuple[str, ...]]:
    """A forward-only graph of the explainer on a deep copy of its model: (graph, method, head steps);
    `images` trace a model torch.fx cannot (`fastcam.deploy.heads`)."""
    if type(explainer) is SoftCAM:
        return SoftCAMGraph(copy.deepcopy(explainer.net), given_targets=given_targets), "softcam", ()
    if type(explainer) is GradCAM:
        if len(explainer.layers) != 1:
            raise ValueError("export takes Grad-CAM at one target layer, got a multi-layer explainer")
        if explainer.reshape_transform is not None or explainer.output_fn is not None:
            raise ValueError("export takes a model returning (B, K) logits at a (B, C, h, w) layer: "
                             "reshape_transform and output_fn are not exported")
        if explainer.gradient_noise:
            raise ValueError("export refuses gradient_noise (a robustness-study setting, not an explanation to serve)")
        name = explainer.layers[0][0]
        model = copy.deepcopy(explainer.model)
        head = pooled_linear_head(model, name, model.get_submodule(name), images)
        return PooledCAMGraph(head, given_targets=given_targets), "gradcam", head.steps
    name = getattr(explainer, "name", "")
    why = NOT_EXPORTABLE.get(name, "it is not a forward-only explanation")
    raise ValueError(
        f"{display_name(name) if name else type(explainer).__name__} cannot be exported: {why}. Exportable: "
        "fastcam.SoftCAM(net), and fastcam.GradCAM(model, layer) on a [ReLU] → global average pool → Linear head")


def _model_of(explainer: Explainer) -> nn.Module:
    return explainer.net if isinstance(explainer, SoftCAM) else explainer.model  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------ checks
def _deviation(got: Tensor, want: Tensor) -> float:
    """max |got - want| / (1 + |want|): 0 when equal, <= TOLERANCE passes."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    if got.shape != want.shape:
        return float("inf")
    return float(((got - want).abs() / (1 + want.abs())).max()) if want.numel() else 0.0


def _check(got: dict[str, Tensor], want: dict[str, Tensor], tolerance: float, what: str) -> dict[str, float]:
    """Per-output deviations; a ValueError naming the worst one past `tolerance` (nothing is written then)."""
    errors = {name: _deviation(got[name], want[name]) for name in want}
    bad = {name: err for name, err in errors.items() if not err <= tolerance}
    if bad:
        worst = max(bad, key=lambda n: bad[n])
        raise ValueError(
            f"{what} differs from its reference on the example images: {worst} by {bad[worst]:.3g} "
            f"(tolerance {tolerance:g}; all: {', '.join(f'{k} {v:.3g}' for k, v in errors.items())}); nothing was written")
    return errors


def _half_reference(got: dict[str, Tensor], ref: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Half variants vs the float32 graph: outputs scaled by their range; maps/lowres only of images whose
    predicted class agrees (a near-tie may flip in half precision, then the maps differ legitimately)."""
    same = got["logits"].argmax(1) == ref["logits"].argmax(1)
    scaled_got, scaled_ref = {}, {}
    for name, r in ref.items():
        g = got[name].float()
        if name != "logits":
            g, r = g[same], r[same]
        scale = r.abs().max().clamp_min(1e-12) if r.numel() else torch.tensor(1.0)
        scaled_got[name], scaled_ref[name] = g / scale, r / scale
    return scaled_got, scaled_ref


def _named(outputs: Sequence[Tensor], names: Sequence[str]) -> dict[str, Tensor]:
    return {name: out for name, out in zip(names, outputs)}


# ------------------------------------------------------------------------------------------ exporters
def _example_args(images: Tensor, targets: Tensor | None, dtype: torch.dtype) -> tuple[Tensor, ...]:
    images = images.detach().to("cpu", dtype)
    return (images,) if targets is None else (images, targets.detach().cpu())


def _dynamic_ranges(program: torch.export.ExportedProgram, names: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, int | None]]:
    """{axis name: (min, max)} of the inputs' symbolic dims; a specialised batch dim is a bug, refused."""
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    out: dict[str, tuple[int, int | None]] = {}
    for input_name, axes in names.items():
        shape = placeholders[input_name].meta["val"].shape
        for axis, axis_name in zip(axes, ("batch", "height", "width") if input_name == "images" else ("batch",)):
            dim = shape[axis]
            if not isinstance(dim, torch.SymInt):
                continue
            bounds = program.range_constraints.get(dim.node.expr)
            low = int(bounds.lower) if bounds is not None and bounds.lower.is_Integer else 0
            # torch's int_oo (unbounded) claims to be a finite integer; only a sympy Integer is a real bound
            high = int(bounds.upper) if bounds is not None and bounds.upper.is_Integer else None
            out.setdefault(axis_name, (low, high))
    if "batch" not in out:
        raise RuntimeError("the exporter specialised the batch size; please report this model")
    return out


def _export_program(graph: nn.Module, args: tuple[Tensor, ...]) -> torch.export.ExportedProgram:
    auto = torch.export.Dim.AUTO
    shapes: dict[str, Any] = {"images": {0: auto, 2: auto, 3: auto}}
    if len(args) == 2:
        shapes["target"] = {0: auto}
    return torch.export.export(graph, args, dynamic_shapes=shapes, strict=False)


def _onnx_program(graph: nn.Module, args: tuple[Tensor, ...], inputs: Sequence[str], outputs: Sequence[str],
                  opset: int) -> Any:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"format='onnx' needs the onnx and onnxscript packages ({exc}): pip install onnx onnxscript "
            "(and onnxruntime to run and check the file)") from exc
    shapes: dict[str, Any] = {"images": {0: "batch", 2: "height", 3: "width"}}
    if len(args) == 2:
        shapes["target"] = {0: "batch"}
    with warnings.catch_warnings():
        # `target` shares the images' batch axis: the exporter says it keeps one name for both, as wanted
        warnings.filterwarnings("ignore", message=r"# The axis name: batch will not be used")
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")  # torch's own
        return torch.onnx.export(graph, args, None, dynamo=True, opset_version=opset, input_names=list(inputs),
                                 output_names=list(outputs), dynamic_shapes=shapes, verbose=False)


def _onnxruntime_runner(model_bytes: bytes) -> Callable[..., tuple[Tensor, ...]] | None:
    """A callable running the ONNX bytes in ONNX Runtime (CPU), or None without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return None
    options = onnxruntime.SessionOptions()
    # one check run: no idle worker threads left spinning on the caller's cores afterwards
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*args: Tensor) -> tuple[Tensor, ...]:
        return tuple(torch.from_numpy(o) for o in session.run(None, {n: a.numpy() for n, a in zip(names, args)}))

    return run


# ------------------------------------------------------------------------------------------ export
def export(
    explainer: Explainer,
    path: str | Path,
    example_images: Tensor,
    *,
    format: str = "onnx",
    targets: str = "predicted",
    dtype: str | torch.dtype = "float32",
    opset: int = OPSET,
) -> ExportInfo:
    """Export `explainer` as one forward-only graph file, after checking it against the explainer itself.

    Args:
        explainer: `fastcam.SoftCAM(net)`, or `fastcam.GradCAM(model, layer)` with a pooled-linear head
            after `layer` (anything else is refused with a ValueError naming what is not exportable).
        path: the file to write (".onnx" or ".pt2" by convention); written only after every check passed.
        example_images: (B, C, H, W) float images on the model's device, in its dtype: traced, and the
            batch the checks run on (random images work; a few real ones exercise more).
        format: "onnx" or "torch.export" (`torch.export.save`; load with `torch.export.load(path).module()`).
        targets: "predicted" (argmax inside the graph) or "given" (a second input `target`, (B,) int64).
        dtype: "float32" (default), "float16" or "bfloat16" (torch.export only): the graph's weights and
            `images` input; outputs stay float32.
        opset: ONNX opset version.

    Returns:
        `ExportInfo`: names, dynamic axes, the checks' deviations. See the module docstring for the graph's
        inputs and outputs.
    """
    format = _choice("format", format, FORMATS)
    targets = _choice("targets", targets, TARGETS)
    dtype_name = _dtype_name(dtype)
    if format == "onnx" and dtype_name == "bfloat16":
        raise ValueError("ONNX has no bfloat16 convolution: export dtype='float16' to ONNX, or bfloat16 with "
                         "format='torch.export'")
    if not isinstance(explainer, Explainer):
        raise TypeError(f"explainer must be a fastcam explainer, got {type(explainer).__name__}")
    images = check_image_batch(example_images)
    if images.dim() != 4:
        raise ValueError(f"export takes 2-D images (B, C, H, W), got shape {tuple(images.shape)}")
    training = first_training_module(_model_of(explainer))
    if training is not None:
        raise ValueError(f"the model is in training mode (module {training!r}): call .eval() before exporting")
    given = targets == "given"
    graph, method, head = _graph(explainer, given, images)
    graph.eval()
    inputs = ("images", "target") if given else ("images",)
    outputs = ("logits", "maps", "lowres", "evidence") if method == "softcam" else ("logits", "maps", "lowres")

    # 1. the forward-only graph against the autograd explainer (the oracle), on the model's own device
    oracle_targets = None
    if given:  # not only the predicted class: every image explains another class
        logits = explainer.explain(images).logits
        oracle_targets = torch.arange(images.shape[0], device=images.device) % logits.shape[1]
    oracle = explainer.explain(images, oracle_targets)
    want = {"logits": oracle.logits, "maps": oracle.maps, "lowres": oracle.lowres}
    with torch.no_grad():
        eager = _named(graph(images, oracle_targets) if given else graph(images), outputs)
    if method == "softcam":  # the evidence has no field in Explanation: the network's own output is its oracle
        with torch.no_grad():
            want["evidence"] = _model_of(explainer)(images)[1].float()
    _check(eager, want, TOLERANCE, f"the forward-only {display_name(method)} graph")

    # 2. the artefact, traced on a CPU copy in the variant's dtype, against the explainer (float32 on the CPU),
    # or against the float32 graph run on the CPU (a model on a GPU: cuDNN's and TF32's rounding are the
    # device's, not the export's), or loosely against the float32 graph (half variants)
    graph.to(device="cpu", dtype=DTYPES[dtype_name])
    args = _example_args(images, oracle_targets, DTYPES[dtype_name])
    reference = {k: v.cpu() for k, v in want.items()}
    if dtype_name == "float32" and images.device.type != "cpu":
        with torch.no_grad():
            reference = _named(graph(*args), outputs)
    if format == "onnx":
        program = _onnx_program(graph, args, inputs, outputs, opset)
        exported = program.exported_program
        runner = _onnxruntime_runner(program.model_proto.SerializeToString())
        checked_with = "onnxruntime" if runner is not None else "torch.export"
    else:
        exported = _export_program(graph, args)
        runner, checked_with = None, "torch.export"
    with torch.no_grad():
        got = _named((runner or exported.module())(*args), outputs)
    if dtype_name == "float32":
        errors = _check(got, reference, TOLERANCE, f"the exported {format} graph")
    else:
        errors = _check(*_half_reference(got, {k: v.cpu() for k, v in eager.items()}), HALF_TOLERANCE[dtype_name],
                        f"the {dtype_name} {format} graph (vs float32)")

    info = ExportInfo(
        path=Path(path), format=format, method=method, targets=targets, dtype=dtype_name,
        opset=opset if format == "onnx" else None, inputs=inputs, outputs=outputs,
        dynamic=_dynamic_ranges(exported, {"images": (0, 2, 3), **({"target": (0,)} if given else {})}),
        head=head, max_error=errors, checked_with=checked_with,
    )
    # 3. written only now, with the record in the file's metadata
    info.path.parent.mkdir(parents=True, exist_ok=True)
    record = json.dumps(info.record())
    if format == "onnx":
        program.model.metadata_props["fastcam"] = record
        program.save(str(info.path))
    else:
        torch.export.save(exported, str(info.path), extra_files={"fastcam.json": record})
    return info

"""What `fastcam.deploy` can write, torch-free: the CLI's `fastcam export --help` reads these choices."""
from __future__ import annotations

__all__ = ["DTYPE_NAMES", "EXPORTABLE", "FORMATS", "NOT_EXPORTABLE", "OPSET", "TARGETS"]

#: graph file formats: ONNX (torch.onnx.export(dynamo=True)) or `torch.export.save`'s .pt2
FORMATS = ("onnx", "torch.export")
#: "predicted": argmax inside the graph; "given": a second input `target` (B,) int64
TARGETS = ("predicted", "given")
#: the variants' dtypes (weights and the `images` input; outputs stay float32)
DTYPE_NAMES = ("float32", "float16", "bfloat16")
#: the ONNX opset written (ONNX Runtime >= 1.16 runs it)
OPSET = 20
#: the registry ids of the forward-only methods
EXPORTABLE = ("softcam", "gradcam")
#: why the other methods cannot be one forward-only graph
NOT_EXPORTABLE: dict[str, str] = {
    "gradcampp": "its weights need the gradients at the target layer (a backward pass)",
    "scorecam": "it runs one forward per channel mask",
    "cfcam": "it needs the gradients and clusters each image's channels with DBSCAN",
}

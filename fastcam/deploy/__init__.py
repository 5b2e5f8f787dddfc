"""Deploy explanations: SoftCAM and pooled-head Grad-CAM as one forward-only graph (ONNX, torch.export).

>>> info = fastcam.deploy.export(fastcam.SoftCAM(net), "softcam.onnx", images)   # checked, then written
>>> import onnxruntime
>>> logits, maps, lowres, evidence = onnxruntime.InferenceSession("softcam.onnx").run(None, {"images": x})

- `export` (in `exporter`): the explainer, checked against its autograd self, into a file.
- `graphs`: the forward-only `nn.Module`s that are traced (`SoftCAMGraph`, `PooledCAMGraph`).
- `heads`: the pooled-linear verification that makes Grad-CAM forward-only.
- `export_spec` (in `spec`): the same from a model spec and a weights file (`fastcam export`).
"""
from fastcam.deploy.exporter import DTYPES, FORMATS, OPSET, TARGETS, ExportInfo, export
from fastcam.deploy.graphs import PooledCAMGraph, SoftCAMGraph
from fastcam.deploy.heads import NotPooledLinearError, PooledLinearHead, pooled_linear_head
from fastcam.deploy.spec import export_spec

__all__ = [
    "DTYPES", "FORMATS", "OPSET", "TARGETS", "ExportInfo", "NotPooledLinearError", "PooledCAMGraph",
    "PooledLinearHead", "SoftCAMGraph", "export", "export_spec", "pooled_linear_head",
]

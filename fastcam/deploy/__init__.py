"""Deploy explanations: SoftCAM and pooled-head Grad-CAM as one forward-only graph (ONNX, torch.export).

>>> info = fastcam.deploy.export(fastcam.SoftCAM(net), "softcam.onnx", images)   # checked, then written
>>> import onnxruntime
>>> logits, maps, lowres, evidence = onnxruntime.InferenceSession("softcam.onnx").run(None, {"images": x})

- `exporter`: `export`, the explainer checked against its autograd self, then written as a graph file;
- `graphs`: the forward-only `nn.Module`s that are traced (`SoftCAMGraph`, `PooledCAMGraph`);
- `heads`: the pooled-linear verification that makes Grad-CAM forward-only;
- `spec`: `export_spec`, the same from a model spec and a weights file (`fastcam export`);
- `options`: formats, targets, dtypes, opset (torch-free, for the CLI).

The names below load on first access, so `fastcam.deploy.options` imports no torch.
"""
from fastcam._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "DTYPE_NAMES": "fastcam.deploy.options",
    "EXPORTABLE": "fastcam.deploy.options",
    "FORMATS": "fastcam.deploy.options",
    "OPSET": "fastcam.deploy.options",
    "TARGETS": "fastcam.deploy.options",
    "DTYPES": "fastcam.deploy.exporter",
    "ExportInfo": "fastcam.deploy.exporter",
    "export": "fastcam.deploy.exporter",
    "PooledCAMGraph": "fastcam.deploy.graphs",
    "SoftCAMGraph": "fastcam.deploy.graphs",
    "NotPooledLinearError": "fastcam.deploy.heads",
    "PooledLinearHead": "fastcam.deploy.heads",
    "pooled_linear_head": "fastcam.deploy.heads",
    "export_spec": "fastcam.deploy.spec",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

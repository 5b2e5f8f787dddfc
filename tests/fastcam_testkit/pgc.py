"""Float64 oracles: pytorch-grad-cam's formulas written out from its source (pytorch_grad_cam/*.py), and
activations/gradients captured with plain hooks and `backward()` (pytorch-grad-cam's own way), so no
fastcam code computes the expected values.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def activations_and_grads(model: nn.Module, layers: Sequence[str], x: torch.Tensor,
                          targets: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """The layers' outputs, d(sum of target logits)/d(output) and the logits, in the model's dtype (hooks +
    backward, as pytorch-grad-cam's ActivationsAndGradients)."""
    modules = dict(model.named_modules())
    acts: dict[str, torch.Tensor] = {}

    def keep(name: str):  # noqa: ANN202
        def hook(m: nn.Module, i: object, o: torch.Tensor) -> torch.Tensor:
            o = o.clone()  # a later in-place ReLU must not touch what is kept
            o.retain_grad()
            acts[name] = o
            return o
        return hook

    handles = [modules[name].register_forward_hook(keep(name)) for name in layers]
    try:
        with torch.enable_grad():
            logits = model(x)
            logits.gather(1, targets[:, None]).sum().backward()
    finally:
        for h in handles:
            h.remove()
    model.zero_grad(set_to_none=True)
    return [acts[n].detach() for n in layers], [acts[n].grad.detach() for n in layers], logits.detach()


def get_2d_projection(activation_batch: np.ndarray) -> np.ndarray:
    """pytorch_grad_cam.utils.svd_on_activations.get_2d_projection, verbatim (float64, LAPACK's sign)."""
    activation_batch = activation_batch.copy()
    activation_batch[np.isnan(activation_batch)] = 0
    projections = []
    for activations in activation_batch:
        reshaped_activations = activations.reshape(activations.shape[0], -1).transpose()
        reshaped_activations = reshaped_activations - reshaped_activations.mean(axis=0)
        U, S, VT = np.linalg.svd(reshaped_activations, full_matrices=True)
        projection = reshaped_activations @ VT[0, :]
        projections.append(projection.reshape(activations.shape[1:]))
    return np.float64(projections)


def signed_projection(x: torch.Tensor) -> torch.Tensor:
    """`get_2d_projection` with fastcam's documented sign: the one under which the *uncentred* projection
    (each pixel's channel vector times the first right singular vector) sums to >= 0."""
    proj = torch.from_numpy(get_2d_projection(x.double().numpy()))
    out = []
    for b in range(x.shape[0]):
        flat = x[b].double().flatten(1).T  # (hw, C)
        centred = flat - flat.mean(0)
        _, _, vt = np.linalg.svd(centred.numpy(), full_matrices=True)
        v = torch.from_numpy(vt[0])
        same = torch.allclose(centred @ v, proj[b].flatten())  # the oracle's projection used this v
        sign = 1.0 if float((flat @ v).sum()) >= 0 else -1.0
        out.append(proj[b] * (sign if same else -sign))
    return torch.stack(out)


def cam_image(method: str, acts: torch.Tensor, grads: torch.Tensor, eigen_smooth: bool = False) -> torch.Tensor:
    """pytorch-grad-cam's `get_cam_image` of `method` (before its ReLU), float64, with fastcam's sign for
    the projections."""
    a, g = acts.double(), grads.double()
    project = signed_projection
    if method == "eigencam":
        return project(a)
    if method == "eigengradcam":
        return project(g * a)
    if method in ("hirescam", "gradcamelementwise", "layercam"):
        per = {"hirescam": g * a, "gradcamelementwise": torch.relu(g * a), "layercam": torch.relu(g) * a}[method]
        return project(per) if eigen_smooth else per.sum(1)
    if method == "gradcam":
        w = g.mean((2, 3))
    elif method == "xgradcam":
        w = (g * a / (a.sum((2, 3), keepdim=True) + 1e-7)).sum((2, 3))
    else:
        raise ValueError(method)
    weighted = w[:, :, None, None] * a
    return project(weighted) if eigen_smooth else weighted.sum(1)


def scale(cam: torch.Tensor, size: tuple[int, int] | None = None, norm: str = "max") -> torch.Tensor:
    """`scale_cam_image`: normalise each map, then resize (cv2's INTER_LINEAR = half-pixel bilinear).
    `norm`: "minmax" (pytorch-grad-cam: (x - min) / (1e-7 + max - min)) or "max" (fastcam: x / max)."""
    if norm == "minmax":
        low = cam.flatten(1).min(1).values[:, None, None]
        cam = cam - low
        cam = cam / (1e-7 + cam.flatten(1).max(1).values[:, None, None])
    else:
        cam = cam / cam.flatten(1).max(1).values.clamp_min(1e-300)[:, None, None]
    if size is not None:
        cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return cam


def aggregate(cams: Sequence[torch.Tensor], size: tuple[int, int], norm: str = "max") -> torch.Tensor:
    """`compute_cam_per_layer` + `aggregate_multi_layers`: ReLU, scale each layer to the input, ReLU, mean,
    scale again."""
    per_layer = torch.stack([scale(torch.relu(c), size, norm) for c in cams], dim=1)
    return scale(torch.relu(per_layer).mean(1), None, norm)


# ------------------------------------------------------------------ pytorch-grad-cam itself (the real package)
#: how CI installs pytorch-grad-cam (README's set-up): without its dependencies, whose torchvision would
#: bring a torch build of its own
PGC_INSTALL = ".venv/bin/pip install --no-deps -c constraints.txt grad-cam"


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    """A TEST-ONLY `torchvision` holding just what pytorch-grad-cam 1.5.7 touches at import time:
    `transforms.Compose/Normalize/ToTensor` (its `preprocess_image`), `transforms.functional.resize` (SESS)
    and `ops.box_iou` (FasterRCNNBoxScoreTarget). Compose/Normalize/ToTensor behave as torchvision's on
    (H, W, C) numpy images; the other two raise when called (nothing here uses them)."""
    root, transforms, functional, ops = (types.ModuleType(name) for name in (
        "torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops"))

    class Compose:
        def __init__(self, steps: Sequence[object]) -> None:
            self.steps = list(steps)

        def __call__(self, x: object) -> object:
            for step in self.steps:
                x = step(x)  # type: ignore[operator]
            return x

    class ToTensor:
        def __call__(self, img: np.ndarray) -> torch.Tensor:
            array = img[:, :, None] if img.ndim == 2 else img
            tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
            return tensor.float().div(255) if tensor.dtype == torch.uint8 else tensor

    class Normalize:
        def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
            self.mean, self.std = mean, std

        def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
            mean = torch.as_tensor(self.mean, dtype=tensor.dtype).view(-1, 1, 1)
            return (tensor - mean) / torch.as_tensor(self.std, dtype=tensor.dtype).view(-1, 1, 1)

    def unavailable(*args: object, **kwargs: object) -> None:
        raise NotImplementedError("the test-only torchvision stand-in does not implement this")

    transforms.Compose, transforms.ToTensor, transforms.Normalize = Compose, ToTensor, Normalize
    functional.resize = unavailable
    ops.box_iou = unavailable
    transforms.functional, root.transforms, root.ops = functional, transforms, ops
    return {m.__name__: m for m in (root, transforms, functional, ops)}


def import_pytorch_grad_cam() -> types.ModuleType:
    """The real pytorch-grad-cam package (PyPI `grad-cam`), imported with the real torchvision where that
    imports, else with `_torchvision_stand_in` in sys.modules for the duration of the import only (so
    nothing else sees a torchvision). Raises ImportError when grad-cam is not installed."""
    if importlib.util.find_spec("pytorch_grad_cam") is None:
        raise ImportError(f"pytorch-grad-cam is not installed: {PGC_INSTALL}")
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - missing, or built for another torch
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        stand_in = _torchvision_stand_in()
        sys.modules.update(stand_in)
        try:
            import pytorch_grad_cam
        finally:
            for name in stand_in:
                sys.modules.pop(name, None)
        return pytorch_grad_cam
    import pytorch_grad_cam

    return pytorch_grad_cam


def pytorch_grad_cam_or_skip() -> types.ModuleType:
    """`import_pytorch_grad_cam()` for a test module: skips the module where grad-cam is not installed,
    except under CI (CI=true), where README's set-up installs it and its absence is a failure."""
    import os

    import pytest

    try:
        return import_pytorch_grad_cam()
    except ImportError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{exc} (README's set-up)", allow_module_level=True)
        raise  # unreachable: pytest.skip raises


#: pytorch-grad-cam's modules that import `get_2d_projection` by name
PROJECTING_MODULES = ("base_cam", "eigen_cam", "eigen_grad_cam", "layer_cam", "hirescam", "grad_cam_elementwise")


def give_fastcam_sign(monkeypatch: "pytest.MonkeyPatch") -> None:  # noqa: F821
    """Make pytorch-grad-cam's principal components take fastcam's sign (the component along the mean
    activation; pytorch-grad-cam keeps the SVD's arbitrary one): its own `get_2d_projection`, each image's
    projection flipped where its sign differs from fastcam's, for the duration of a test."""
    svd = importlib.import_module("pytorch_grad_cam.utils.svd_on_activations")
    original = svd.get_2d_projection

    def signed(batch: np.ndarray) -> np.ndarray:
        projections = original(batch)
        for b, activations in enumerate(np.nan_to_num(batch)):
            flat = activations.reshape(activations.shape[0], -1).T.astype(np.float64)
            centred = flat - flat.mean(0)
            v = np.linalg.svd(centred, full_matrices=False)[2][0]
            theirs = 1.0 if float(projections[b].ravel() @ (centred @ v)) >= 0 else -1.0
            ours = 1.0 if float(flat.mean(0) @ v) >= 0 else -1.0
            projections[b] *= theirs * ours
        return projections

    for module in PROJECTING_MODULES:
        monkeypatch.setattr(importlib.import_module(f"pytorch_grad_cam.{module}"), "get_2d_projection", signed)

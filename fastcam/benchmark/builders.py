"""How each contender of `fastcam bench` is made runnable on a `Setting`: `build(key, setting)`.

Every contender explains the same batch for the same target classes. A contender whose library is not
importable raises `Skip` (recorded with the reason, not fatal). fastcam's explainers come from the
method registry; the peers from their own libraries; the CF-CAM authors' loop from
`fastcam.benchmark.released`.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

import torch
from torch import nn

from fastcam.benchmark.contenders import CONTENDER_KEYS, PYTORCH_GRAD_CAM_METHODS, class_name
from fastcam.benchmark.released import ReleasedCFCAMLoop
from fastcam.benchmark.setting import Setting
from fastcam.methods.registry import METHODS, get_method, method_names


class Skip(Exception):
    """A contender that cannot run here (library missing, method not built yet): recorded, not fatal."""


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or a library failing on import (e.g. no torchvision)
        raise Skip(f"{name} not importable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


def _fastcam_class(method: str) -> Any:
    """fastcam's explainer class registered as `method`."""
    info = get_method(method)
    try:
        return info.load()
    except (ImportError, AttributeError) as exc:
        raise Skip(f"{info.class_path} is not available in this build") from exc


def _softcam_net(s: Setting) -> nn.Module:
    """The setting's model converted to a SoftCAM network (once per setting), with its own predictions."""
    if s.softcam_net is None:
        softcam = getattr(importlib.import_module("fastcam"), "softcam", None)
        if softcam is None or not hasattr(softcam, "convert"):
            raise Skip("fastcam.softcam.convert is not available in this build")
        net = softcam.convert(s.model, s.num_classes).to(s.images.device).eval()
        with torch.inference_mode():
            logits, _ = net(s.images)
        s.softcam_net, s.softcam_targets = net, logits.argmax(dim=1).clone()
    return s.softcam_net


#: (run, close, note): one call of the contender, its clean-up, and a remark for the table
Built = tuple[Callable[[], Any], Callable[[], None], str]


def _nothing() -> None:
    return None


def _plain_inference(s: Setting) -> Built:
    def run() -> Any:
        with torch.inference_mode():
            return s.model(s.images)
    return run, _nothing, ""


def _fastcam_post_hoc(method: str) -> Callable[[Setting], Built]:
    def make(s: Setting) -> Built:
        cls = _fastcam_class(method)
        # methods that run perturbed forwards (Score-CAM's family, Ablation-CAM) pack them in batches
        batched = "batch_size" in inspect.signature(cls.__init__).parameters
        kwargs = {"batch_size": s.config.scorecam_batch_size} if batched else {}
        cam = cls(s.model, s.layer_name, **kwargs)
        note = f"{s.config.scorecam_batch_size} perturbed inputs per forward" if batched else ""
        return (lambda: cam(s.images, s.targets)), cam.close, note
    return make


def _softcam_inference(s: Setting) -> Built:
    net = _softcam_net(s)

    def run() -> Any:
        with torch.inference_mode():
            return net(s.images)
    return run, _nothing, "the converted network's own forward"


def _fastcam_softcam(s: Setting) -> Built:
    net = _softcam_net(s)
    cam = _fastcam_class("softcam")(net)
    close = getattr(cam, "close", _nothing)
    return (lambda: cam(s.images, s.softcam_targets)), close, "ratio target against the SoftCAM net's inference"


def _torchcam(method: str) -> Callable[[Setting], Built]:
    def make(s: Setting) -> Built:
        peer_class = getattr(_import("torchcam.methods"), str(METHODS[method].torchcam))
        targets = [int(t) for t in s.targets.tolist()]
        shape = tuple(s.images.shape[1:])
        if method == "scorecam":
            bs = s.config.peer_scorecam_batch_size or 32
            extractor = peer_class(s.model, target_layer=s.layer_name, batch_size=bs, input_shape=shape)

            def run() -> Any:
                with torch.inference_mode():
                    scores = s.model(s.images)
                return extractor(class_idx=targets, scores=scores)
            return run, extractor.remove_hooks, f"{bs} masked inputs per forward; maps at layer resolution"
        extractor = peer_class(s.model, target_layer=s.layer_name, input_shape=shape)
        return ((lambda: extractor(class_idx=targets, scores=s.model(s.images))), extractor.remove_hooks,
                "maps at layer resolution (no upsampling)")
    return make


def _captum_gradcam(s: Setting) -> Built:
    explainer = _import("captum.attr").LayerGradCam(s.model, s.layer)
    return ((lambda: explainer.attribute(s.images, target=s.targets, relu_attributions=True)), _nothing,
            "maps at layer resolution, not normalised")


def _pytorch_grad_cam(method: str, package: str = "pytorch_grad_cam") -> Callable[[Setting], Built]:
    """A pytorch-grad-cam call of `method` as its users write it, run by `package`: pytorch-grad-cam itself
    or `fastcam.compat.pytorch_grad_cam` (the same call, the same arguments)."""
    def make(s: Setting) -> Built:
        pgc = _import(package)
        outputs = _import(f"{package}.utils.model_targets")
        cam = getattr(pgc, class_name(method))(model=s.model, target_layers=[s.layer])
        if method in ("scorecam", "ablationcam") and s.config.peer_scorecam_batch_size:
            cam.batch_size = s.config.peer_scorecam_batch_size
        wanted = [outputs.ClassifierOutputTarget(int(t)) for t in s.targets.tolist()]
        release = getattr(getattr(cam, "activations_and_grads", None), "release", _nothing)
        batch = f", {cam.batch_size} perturbed inputs per forward" if hasattr(cam, "batch_size") else ""
        return (lambda: cam(input_tensor=s.images, targets=wanted)), release, f"numpy maps on the host{batch}"
    return make


def _released_cfcam(s: Setting) -> Built:
    _import("sklearn.cluster")
    loop = ReleasedCFCAMLoop(s.model, s.layer)
    targets = [int(t) for t in s.targets.tolist()]

    def run() -> Any:
        return [loop(s.images[i:i + 1], targets[i]) for i in range(s.images.shape[0])]
    return run, loop.close, "one image at a time, full backward, sklearn DBSCAN per image"


_BUILDERS: dict[str, Callable[[Setting], Built]] = {
    "inference": _plain_inference,
    **{m: _fastcam_post_hoc(m) for m in method_names(post_hoc=True)},
    "softcam-inference": _softcam_inference,
    "softcam": _fastcam_softcam,
    "torchcam-gradcam": _torchcam("gradcam"),
    "torchcam-scorecam": _torchcam("scorecam"),
    "torchcam-layercam": _torchcam("layercam"),
    "torchcam-xgradcam": _torchcam("xgradcam"),
    "captum-gradcam": _captum_gradcam,
    **{f"pgc-{m}": _pytorch_grad_cam(m) for m in PYTORCH_GRAD_CAM_METHODS},
    **{f"compat-{m}": _pytorch_grad_cam(m, "fastcam.compat.pytorch_grad_cam") for m in PYTORCH_GRAD_CAM_METHODS},
    "released-cfcam": _released_cfcam,
}


def build(key: str, s: Setting) -> Built:
    """(run, close, note) of contender `key` on the setting; raises Skip when it cannot run here."""
    make = _BUILDERS.get(key)
    if make is None:
        raise ValueError(f"unknown contender {key!r}; choose from {', '.join(CONTENDER_KEYS)}")
    return make(s)

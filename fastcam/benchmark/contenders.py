"""The contenders of `fastcam bench`, in table order: what is timed, under which name, against what.

Torch-free on purpose, like the method registry it reads: `fastcam bench --help` lists the contender
keys without importing torch. How each contender is built lives in `fastcam.benchmark.builders`.
"""
from __future__ import annotations

from typing import NamedTuple

from fastcam.methods.registry import METHODS, method_names


class Contender(NamedTuple):
    """One timed contender.

    Attributes:
        key: its id on the command line and in the JSON ("torchcam-gradcam").
        name: how tables name it: library and class ("torchcam GradCAM").
        group: "baseline" (plain inference), "fastcam" (its explainers), "compat" (a peer library's call
            run by `fastcam.compat`) or "peer".
        method: the registry id of the method it computes, or the key of a baseline.
    """

    key: str
    name: str
    group: str
    method: str


def _fastcam(method: str) -> Contender:
    """fastcam's explainer of `method`, named by its class as the peers are ("fastcam GradCAMPlusPlus")."""
    return Contender(method, f"fastcam {METHODS[method].class_path.rpartition(':')[2]}", "fastcam", method)


def _torchcam(method: str) -> Contender:
    return Contender(f"torchcam-{method}", f"torchcam {METHODS[method].torchcam}", "peer", method)


def class_name(method: str) -> str:
    """fastcam's class name of `method`, which is also pytorch-grad-cam's ("GradCAMPlusPlus")."""
    return METHODS[method].class_path.rpartition(":")[2]


#: the methods timed through pytorch-grad-cam's own classes and through the compat module
PYTORCH_GRAD_CAM_METHODS: tuple[str, ...] = ("gradcam", "gradcampp", "scorecam", "ablationcam", "eigencam")


def _pytorch_grad_cam(method: str) -> Contender:
    return Contender(f"pgc-{method}", f"pytorch-grad-cam {class_name(method)}", "peer", method)


def _compat(method: str) -> Contender:
    """The same pytorch-grad-cam call run by `fastcam.compat.pytorch_grad_cam`."""
    return Contender(f"compat-{method}", f"fastcam.compat.pytorch_grad_cam {class_name(method)}", "compat", method)


CONTENDERS: tuple[Contender, ...] = (
    Contender("inference", "plain inference", "baseline", "inference"),
    *(_fastcam(m) for m in method_names(post_hoc=True)),
    # SoftCAM explains its own network: its ratio is taken against that network's plain inference
    Contender("softcam-inference", "SoftCAM net inference", "baseline", "softcam-inference"),
    _fastcam("softcam"),
    _torchcam("gradcam"),
    _torchcam("scorecam"),
    _torchcam("layercam"),
    _torchcam("xgradcam"),
    Contender("captum-gradcam", "captum LayerGradCam", "peer", "gradcam"),
    *(_pytorch_grad_cam(m) for m in PYTORCH_GRAD_CAM_METHODS),
    *(_compat(m) for m in PYTORCH_GRAD_CAM_METHODS),
    Contender("released-cfcam", "CF-CAM released code (per image)", "peer", "cfcam"),
)
CONTENDER_KEYS: tuple[str, ...] = tuple(c.key for c in CONTENDERS)
#: what `fastcam bench` runs without --contenders: all but the registry's slow methods (SS-CAM, IS-CAM:
#: tens of Score-CAMs per call), which run when asked for by name
DEFAULT_CONTENDER_KEYS: tuple[str, ...] = tuple(c.key for c in CONTENDERS if not (c.method in METHODS and METHODS[c.method].slow))

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
        group: "baseline" (plain inference), "fastcam" or "peer".
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
    Contender("pgc-gradcam", "pytorch-grad-cam GradCAM", "peer", "gradcam"),
    Contender("pgc-scorecam", "pytorch-grad-cam ScoreCAM", "peer", "scorecam"),
    Contender("released-cfcam", "CF-CAM released code (per image)", "peer", "cfcam"),
)
CONTENDER_KEYS: tuple[str, ...] = tuple(c.key for c in CONTENDERS)
#: what `fastcam bench` runs without --contenders: all but the registry's slow methods (SS-CAM, IS-CAM:
#: tens of Score-CAMs per call), which run when asked for by name
DEFAULT_CONTENDER_KEYS: tuple[str, ...] = tuple(c.key for c in CONTENDERS if not (c.method in METHODS and METHODS[c.method].slow))

"""The method registry: the one place that names every explanation method.

Torch-free on purpose: the CLI builds its `--method` choices and help from this table without importing
torch (`fastcam --help` stays fast). The classes load lazily by their import path.

Every other layer (pipeline, CLI, report, eval, bench, demo) asks this module for names, display names,
and classes; none keeps its own list.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the registry stays torch-free at run time
    from torch import nn

    from fastcam.methods.base import Explainer


@dataclass(frozen=True)
class MethodInfo:
    """One explanation method.

    Attributes:
        name: the id used on the command line, in run directories and JSON ("gradcampp").
        display_name: how people write it ("Grad-CAM++"): reports, tables, plots.
        class_path: "module:Class" of the explainer.
        post_hoc: True for methods that explain any classifier at a target layer; False for SoftCAM,
            which explains its own self-explainable network (no target layer).
        reference: the paper.
        torchcam: the torchcam class of the same method (a benchmark contender and parity oracle), if any.
        demo: shown by `fastcam demo` by default (every method with `--methods all`).
        slow: averages many perturbed forwards per channel (SS-CAM, IS-CAM: 10-35 Score-CAMs' worth per
            call); left out of `fastcam bench`'s default contenders.
    """

    name: str
    display_name: str
    class_path: str
    post_hoc: bool = True
    reference: str = ""
    torchcam: str | None = None
    demo: bool = False
    slow: bool = False

    def load(self) -> type[Explainer]:
        """The explainer class (imports torch)."""
        module, _, attr = self.class_path.partition(":")
        return getattr(importlib.import_module(module), attr)

    def build(self, model: nn.Module, target_layer: Any = None, **kwargs: Any) -> Explainer:
        """The explainer of this method on `model` (imports torch): `kwargs` go to its constructor.

        For a method that is not post-hoc (SoftCAM), `model` is its own network (`fastcam.softcam.convert`)
        and `target_layer` is not used; a post-hoc method needs one (a module, dotted name or list).
        """
        try:
            cls = self.load()
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"method {self.name!r} ({self.class_path}) is not available in this fastcam install: "
                             f"{exc}") from exc
        if not self.post_hoc:
            return cls(model, **kwargs)
        if target_layer is None:
            raise ValueError(f"method {self.name!r} needs a target layer (e.g. 'layer4' for a ResNet)")
        return cls(model, target_layer, **kwargs)

    @property
    def needs_gradients(self) -> bool:
        """Whether the method back-propagates to the target layer (read from the class: one place)."""
        return bool(getattr(self.load(), "uses_gradients", False))


_METHODS: tuple[MethodInfo, ...] = (
    MethodInfo("gradcam", "Grad-CAM", "fastcam.methods.gradcam:GradCAM",
               reference="Selvaraju et al., ICCV 2017", torchcam="GradCAM", demo=True),
    MethodInfo("gradcampp", "Grad-CAM++", "fastcam.methods.gradcampp:GradCAMPlusPlus",
               reference="Chattopadhay et al., WACV 2018", torchcam="GradCAMpp", demo=True),
    MethodInfo("scorecam", "Score-CAM", "fastcam.methods.scorecam:ScoreCAM",
               reference="Wang et al., CVPR-W 2020", torchcam="ScoreCAM", demo=True),
    MethodInfo("cfcam", "CF-CAM", "fastcam.methods.cfcam:CFCAM",
               reference="He, Pan & Yao, arXiv 2504.00060, 2025", demo=True),
    MethodInfo("layercam", "Layer-CAM", "fastcam.methods.layercam:LayerCAM",
               reference="Jiang et al., IEEE TIP 2021", torchcam="LayerCAM"),
    MethodInfo("xgradcam", "XGrad-CAM", "fastcam.methods.xgradcam:XGradCAM",
               reference="Fu et al., BMVC 2020", torchcam="XGradCAM"),
    MethodInfo("hirescam", "HiResCAM", "fastcam.methods.hirescam:HiResCAM",
               reference="Draelos & Carin, arXiv 2011.08891, 2020"),
    MethodInfo("gradcamelementwise", "Grad-CAM element-wise", "fastcam.methods.gradcam_elementwise:GradCAMElementWise",
               reference="pytorch-grad-cam (Gildenblat et al.), GradCAMElementWise"),
    MethodInfo("eigencam", "Eigen-CAM", "fastcam.methods.eigencam:EigenCAM",
               reference="Muhammad & Yeasin, IJCNN 2020"),
    MethodInfo("eigengradcam", "Eigen-Grad-CAM", "fastcam.methods.eigengradcam:EigenGradCAM",
               reference="pytorch-grad-cam (Gildenblat et al.), EigenGradCAM"),
    MethodInfo("ablationcam", "Ablation-CAM", "fastcam.methods.ablationcam:AblationCAM",
               reference="Desai & Ramaswamy, WACV 2020"),
    MethodInfo("sscam", "SS-CAM", "fastcam.methods.sscam:SSCAM",
               reference="Wang, Naidu et al., arXiv 2006.14255, 2020", torchcam="SSCAM", slow=True),
    MethodInfo("iscam", "IS-CAM", "fastcam.methods.iscam:ISCAM",
               reference="Naidu et al., arXiv 2010.03023, 2020", torchcam="ISCAM", slow=True),
    MethodInfo("softcam", "SoftCAM", "fastcam.methods.softcam:SoftCAM", post_hoc=False,
               reference="Djoumessi & Berens, MIDL 2026", demo=True),
)

METHODS: dict[str, MethodInfo] = {m.name: m for m in _METHODS}


def method_names(*, post_hoc: bool | None = None, demo: bool | None = None, slow: bool | None = None) -> tuple[str, ...]:
    """All method ids in registry order; `post_hoc=`, `demo=` and `slow=` True/False filter."""
    wanted = {"post_hoc": post_hoc, "demo": demo, "slow": slow}
    return tuple(m.name for m in _METHODS if all(v is None or getattr(m, k) == v for k, v in wanted.items()))


def get_method(name: str) -> MethodInfo:
    """The registry entry of `name`; a ValueError listing the valid names otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(method_names())}") from None


def display_name(name: str) -> str:
    """"gradcampp" -> "Grad-CAM++"; an unknown id is returned as given (old run directories stay readable)."""
    info = METHODS.get(name)
    return info.display_name if info is not None else str(name)


def method_class(name: str) -> Any:
    """The explainer class registered under `name`."""
    return get_method(name).load()

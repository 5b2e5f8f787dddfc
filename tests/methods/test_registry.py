"""The method registry is the one place that names methods; every entry loads and agrees with its class."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fastcam.methods import registry
from fastcam.models import tiny_resnet


class _CountBackward(torch.autograd.Function):
    """Identity whose backward counts its calls: whether a method back-propagates past the target layer."""

    calls = 0

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x.view_as(x)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        _CountBackward.calls += 1
        return grad


class _Probe(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _CountBackward.apply(x)


@pytest.mark.parametrize("name", registry.method_names())
def test_entry_loads_and_names_its_class(name: str) -> None:
    """Each entry's facts checked against the class's behaviour and documentation, not against themselves."""
    from fastcam.methods.base import BaseCAM

    info = registry.get_method(name)
    cls = info.load()
    assert cls.name == name
    # post-hoc methods explain a target layer of any classifier (BaseCAM); SoftCAM its own network
    assert info.post_hoc == issubclass(cls, BaseCAM)
    # the docs introduce the method under the registry's display name, with its paper and an example
    doc = cls.__doc__ or ""
    assert doc.lstrip().startswith(f"{info.display_name}:"), doc.splitlines()[0]
    assert "](https://" in doc and "Example:" in doc and f"fastcam.{cls.__name__}(" in doc
    assert registry.display_name(name) == info.display_name != name
    if not info.post_hoc:
        return
    # needs_gradients: does a call back-propagate through the layers after the target layer?
    model = tiny_resnet(num_classes=3).eval()
    model.avgpool = torch.nn.Sequential(_Probe(), model.avgpool)
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    extra = {"num_samples": 1, "batch_size": 64} if info.slow else {}
    _CountBackward.calls = 0
    cls(model, "layer4", **extra)(images)
    assert info.needs_gradients == (_CountBackward.calls > 0)


def test_display_names_and_unknown_names() -> None:
    assert registry.display_name("gradcampp") == "Grad-CAM++"
    assert registry.display_name("not-a-method") == "not-a-method"  # old run directories stay readable
    with pytest.raises(ValueError, match="unknown method 'nope'; choose from gradcam"):
        registry.get_method("nope")


def test_registry_imports_no_torch() -> None:
    code = "import sys, fastcam.methods.registry as r; r.method_names(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_build_makes_the_registered_class_and_make_explainer_is_its_alias(resnet) -> None:  # noqa: ANN001
    from fastcam.pipeline.explain import make_explainer

    for name in registry.method_names(post_hoc=True):
        with registry.get_method(name).build(resnet, "layer4") as cam:
            assert type(cam) is registry.method_class(name) and cam.layer_name == "layer4"
    with make_explainer(resnet, "gradcam", "layer3", {"eigen_smooth": True}) as cam:
        assert type(cam).__name__ == "GradCAM" and cam.eigen_smooth and cam.layer_name == "layer3"
    with pytest.raises(ValueError, match="needs a target layer"):
        registry.get_method("gradcam").build(resnet, None)
    with pytest.raises(ValueError, match="unknown method 'gradcam\\+\\+'; choose from gradcam, gradcampp"):
        make_explainer(resnet, "gradcam++", "layer4")


@pytest.mark.parametrize("name", registry.method_names(post_hoc=True))
def test_constructors_name_every_option_explicitly(name: str) -> None:
    """No option hides in **kwargs: help() and IDEs show BaseCAM's (and GradientCAM's) keywords."""
    import inspect

    from fastcam.methods.base import BaseCAM, GradientCAM

    cls = registry.get_method(name).load()
    params = inspect.signature(cls).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()), name
    wanted = set(inspect.signature(GradientCAM if cls.uses_gradients else BaseCAM).parameters)
    assert wanted <= set(params), wanted - set(params)
    for option in ("aug_smooth", "eigen_smooth", "reshape_transform"):
        assert params[option].kind is inspect.Parameter.KEYWORD_ONLY

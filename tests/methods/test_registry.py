"""The method registry is the one place that names methods; every entry loads and agrees with its class."""
from __future__ import annotations

import subprocess
import sys

import pytest

from fastcam.methods import registry


@pytest.mark.parametrize("name", registry.method_names())
def test_entry_loads_and_names_its_class(name: str) -> None:
    info = registry.get_method(name)
    cls = info.load()
    assert cls.name == name
    assert info.needs_gradients == cls.uses_gradients
    assert registry.display_name(name) == info.display_name
    assert info.post_hoc == (name != "softcam")


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

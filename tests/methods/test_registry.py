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

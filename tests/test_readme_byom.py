"""The README's "Bring your own model" examples run exactly as written (each ```python block after its
marker). The torchvision and timm ones run where those import (the GPU machine); the others everywhere."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"

#: marker name -> the modules its example imports beyond fastcam and torch
EXAMPLES = {
    "byom-torchvision": ("torchvision",),
    "byom-timm": ("timm",),
    "byom-hf": ("transformers",),
    "byom-targets": (),
    "byom-volumes": (),
}


def readme_block(name: str) -> str:
    marker = f"<!-- readme-test: {name} -->"
    text = README.read_text(encoding="utf-8")
    assert text.count(marker) == 1, f"README.md must hold {marker!r} once"
    found = re.search(r"```python\n(.*?)```", text[text.index(marker):], flags=re.S)
    assert found, f"no ```python block after {marker!r}"
    return found.group(1)


def test_every_marked_example_is_listed() -> None:
    assert set(re.findall(r"<!-- readme-test: (byom-[\w-]+) -->", README.read_text(encoding="utf-8"))) == set(EXAMPLES)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_readme_example_runs_as_written(name: str, one_thread: None) -> None:
    for module in EXAMPLES[name]:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - absent, or built for another torch
            pytest.skip(f"{module} does not import here ({type(exc).__name__}); the example runs where it does")
    torch.manual_seed(0)
    namespace: dict[str, object] = {"__name__": f"readme_{name}"}
    exec(compile(readme_block(name), str(README), "exec"), namespace)  # the repository's own README
    maps = [v for k, v in namespace.items() if k.endswith("maps") and isinstance(v, torch.Tensor)]
    assert maps, "the example computes no maps"
    for m in maps:
        assert torch.isfinite(m).all() and m.min() >= 0 and m.max() <= 1
    if name == "byom-hf":
        assert namespace["exp"].logits.shape == (2, 3)  # type: ignore[attr-defined]
    if name == "byom-targets":
        assert namespace["per_class"].shape == (2, 2, 64, 64)  # type: ignore[attr-defined]
        assert namespace["curve"].curve.std(dim=1).min() > 0  # type: ignore[attr-defined]
    if name == "byom-volumes":
        assert namespace["maps"].shape == (2, 32, 64, 64)  # type: ignore[attr-defined]

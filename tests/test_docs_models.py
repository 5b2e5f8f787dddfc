"""The "Bring your own model" examples of docs/models.md run exactly as written (each ```python block
after its marker). The torchvision and timm ones run where those import (the GPU machine); the others everywhere."""
from __future__ import annotations

import importlib

import pytest
import torch
from fastcam_testkit.docs import DOCS, example_block, marked_names

#: marker name -> the modules its example imports beyond fastcam and torch
EXAMPLES = {
    "byom-torchvision": ("torchvision",),
    "byom-timm": ("timm",),
    "byom-hf": ("transformers",),
    "byom-targets": (),
    "byom-volumes": (),
}


def test_every_marked_example_is_listed() -> None:
    assert marked_names("models.md", "byom-") == set(EXAMPLES)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_models_example_runs_as_written(name: str, one_thread: None) -> None:
    for module in EXAMPLES[name]:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - absent, or built for another torch
            pytest.skip(f"{module} does not import here ({type(exc).__name__}); the example runs where it does")
    torch.manual_seed(0)
    namespace: dict[str, object] = {"__name__": f"docs_{name}"}
    exec(compile(example_block("models.md", name), str(DOCS / "models.md"), "exec"), namespace)  # our own docs
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

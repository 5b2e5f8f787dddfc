"""Any registered post-hoc method, built with options that keep tests fast and deterministic."""
from __future__ import annotations

from typing import Any

from torch import nn

from fastcam.methods.registry import method_class

#: test options per method id: perturbed inputs in large forwards, few samples, seeded noise (so two
#: calls of one explainer give the same maps)
TEST_OPTIONS: dict[str, dict[str, Any]] = {
    "scorecam": {"batch_size": 64},
    "ablationcam": {"batch_size": 64},
    "sscam": {"batch_size": 64, "num_samples": 2, "generator": 0},
    "iscam": {"batch_size": 64, "num_samples": 2},
}

#: methods whose maps of an image depend on the rest of the batch: SS-CAM draws its noise chunk by chunk
#: in the batch's row order, so the same image gets other noise in another batch
BATCH_DEPENDENT = frozenset({"sscam"})


def test_options(name: str) -> dict[str, Any]:
    """The test options of method `name` (a copy; empty for most methods)."""
    return dict(TEST_OPTIONS.get(name, {}))


test_options.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test pytest should collect


def make_method(name: str, model: nn.Module, layer: Any, **kw: Any) -> Any:
    """`method_class(name)(model, layer, ...)` with `test_options(name)` under the given keywords."""
    return method_class(name)(model, layer, **{**test_options(name), **kw})

"""The contenders follow the method registry, and each has exactly one builder."""
from __future__ import annotations

import pytest

from fastcam.benchmark import CONTENDER_KEYS, CONTENDERS, BenchConfig, build, make_setting
from fastcam.benchmark.builders import _BUILDERS
from fastcam.methods.registry import METHODS, method_names


def test_every_registered_method_is_a_fastcam_contender() -> None:
    ours = [c for c in CONTENDERS if c.group == "fastcam"]
    assert [c.key for c in ours] == list(method_names())
    assert [c.name for c in ours] == [f"fastcam {METHODS[m].class_path.rpartition(':')[2]}" for m in method_names()]
    assert all(c.method in METHODS for c in CONTENDERS if c.group == "peer")
    assert len(set(CONTENDER_KEYS)) == len(CONTENDER_KEYS)


def test_every_contender_has_one_builder() -> None:
    assert set(_BUILDERS) == set(CONTENDER_KEYS)
    setting = make_setting(BenchConfig(model="tiny_resnet", size=32, batch=1, device="cpu",
                                       contenders=("inference",)))
    with pytest.raises(ValueError, match="unknown contender 'fastgradcam'"):
        build("fastgradcam", setting)

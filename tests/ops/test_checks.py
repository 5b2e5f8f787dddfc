"""The one validation vocabulary (`check_int`, `check_real`, `check_choice`: name first, then the value) and
the CF-CAM label checks that the torch reference and the Triton kernel share."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastcam.ops import check_choice, check_int, check_real, cluster_filter_weights


def test_check_int_takes_ints_in_range_and_names_the_argument() -> None:
    assert check_int("n", np.int64(3), low=1) == 3 and type(check_int("n", np.int64(3))) is int
    assert check_int("n", -5) == -5  # unbounded by default
    for value, error, message in [
        (True, TypeError, "n must be an int, got bool"),
        (2.0, TypeError, "n must be an int, got float"),
        ("3", TypeError, "n must be an int, got str"),
        (0, ValueError, "n must be an int >= 1 and <= 10, got 0"),
        (11, ValueError, "n must be an int >= 1 and <= 10, got 11"),
    ]:
        with pytest.raises(error, match=message):
            check_int("n", value, low=1, high=10)


def test_check_real_takes_finite_reals_in_range() -> None:
    assert check_real("x", 2) == 2.0 and type(check_real("x", np.float32(0.5))) is float
    assert check_real("x", 0, low=0) == 0.0
    for value, kwargs, error, message in [
        (True, {}, TypeError, "x must be a real number, got bool"),
        ("1", {}, TypeError, "x must be a real number"),
        (math.nan, {}, ValueError, "x must be finite, got nan"),
        (math.inf, {"low": 0}, ValueError, "x must be finite and >= 0"),
        (0.0, {"low": 0, "low_inclusive": False}, ValueError, "x must be finite and > 0, got 0.0"),
        (101, {"low": 0, "high": 100}, ValueError, "x must be finite and >= 0 and <= 100, got 101.0"),
    ]:
        with pytest.raises(error, match=message):
            check_real("x", value, **kwargs)


def test_check_choice_lists_the_choices() -> None:
    assert check_choice("mode", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"mode must be one of \('a', 'b'\), got 'c'"):
        check_choice("mode", "c", ("a", "b"))
    with pytest.raises(ValueError, match="mode must be one of"):
        check_choice("mode", ["a"], {"a", "b"})  # unhashable: not a choice, not a crash


BAD_LABELS = [
    (torch.zeros(2, 4), TypeError, "labels must be int64 or int32, got torch.float32"),
    (torch.zeros(2, 4, dtype=torch.int16), TypeError, "labels must be int64 or int32"),
    (torch.zeros(2, 5, dtype=torch.long), ValueError, r"labels must be a \(B, C\) = \(2, 4\) tensor, got \(2, 5\)"),
    ([[0, 0, 0, 0]] * 2, ValueError, r"labels must be a \(B, C\) = \(2, 4\) tensor, got list"),
    (torch.zeros(2, 4, dtype=torch.long, device="meta"), ValueError, "labels are on meta but the gradients are on cpu"),
]


@pytest.mark.parametrize("labels, error, message", BAD_LABELS)
def test_the_reference_and_the_kernel_refuse_the_same_labels(labels: object, error: type, message: str) -> None:
    gradients = torch.randn(2, 4, 3, 3)
    with pytest.raises(error, match=message):
        cluster_filter_weights(gradients, labels)  # type: ignore[arg-type]
    pytest.importorskip("triton")
    from fastcam.kernels.cfcam_filter import cluster_filter_weights as kernel

    with pytest.raises(error, match=message):  # refused before any launch: no interpreter run
        kernel(gradients, labels)  # type: ignore[arg-type]

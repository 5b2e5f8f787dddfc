"""fastcam.cluster.pairwise_quantile against numpy, bit for bit (moved from tests/test_cluster.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastcam.cluster import pairwise_quantile
from fastcam_testkit import cluster as helpers

explicit_distances = helpers.explicit_distances
SETTINGS = dict(deadline=None, max_examples=20, suppress_health_check=[HealthCheck.too_slow])


@settings(**SETTINGS)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(2, 50),
    st.sampled_from([1, 3, 8, 49, 130]),
    st.sampled_from(["int", "float32", "float64"]),
    st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.floats(0, 1)),
)
def test_pairwise_quantile_is_numpy_bit_for_bit(seed, count, dims, kind, q):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(2, count, dims)) * rng.uniform(0.01, 100) + rng.normal(size=dims) * 10
    if kind == "int":
        points = np.round(points / np.abs(points).max() * 3)
    elif kind == "float32":
        points = np.maximum(points, 0).astype(np.float32)  # ReLU activations, as CF-CAM sees them
    result = pairwise_quantile(torch.from_numpy(points), q)
    assert isinstance(result, torch.Tensor) and result.dtype == torch.float64 and result.shape == (2,)
    for b in range(2):
        distances = explicit_distances(points[b].astype(np.float64))
        expected = np.quantile(distances[~np.eye(count, dtype=bool)], q)
        assert result[b].item() == expected  # exact, not approximately
    assert pairwise_quantile(points[0], q) == np.quantile(  # (N, D) numpy in -> 0-d numpy out
        explicit_distances(points[0].astype(np.float64))[~np.eye(count, dtype=bool)], q
    )


def test_pairwise_quantile_ragged_and_percentile():
    rng = np.random.default_rng(5)
    points = rng.normal(size=(3, 40, 7))
    valid = rng.random((3, 40)) < 0.6
    valid[:, :2] = True
    points_padded = np.where(valid[..., None], points, np.inf)
    result = pairwise_quantile(points_padded, 0.25, valid=valid)
    for b in range(3):
        kept = points[b][valid[b]]
        distances = explicit_distances(kept)[~np.eye(len(kept), dtype=bool)]
        assert result[b] == np.percentile(distances, 25)


def test_pairwise_quantile_bad_input():
    with pytest.raises(ValueError, match="at least 2 valid points"):
        pairwise_quantile(np.zeros((2, 1, 3)), 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pairwise_quantile(np.zeros((2, 5, 3)), 25)
    with pytest.raises(ValueError, match="NaN or Inf"):
        pairwise_quantile(np.full((2, 5, 3), np.nan), 0.5)
    with pytest.raises(TypeError):
        pairwise_quantile(np.zeros((2, 5, 3)), "0.5")



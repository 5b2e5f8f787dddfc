"""fastcam.cluster.quantile_dbscan: the shared-distance call equals pairwise_quantile + dbscan, bit for bit
and label for label, with CF-CAM's eps_floor rule, ragged batches, device parameters and clear errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastcam.cluster._torch_dbscan as engine
from fastcam.cluster import dbscan, pairwise_quantile, quantile_dbscan
from fastcam_testkit import cluster as helpers



@settings(deadline=None, max_examples=15, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.integers(2, 120), st.sampled_from([0.02, 0.25, 0.5, 1.0]), st.integers(1, 12),
       st.booleans(), st.booleans())
def test_equals_pairwise_quantile_then_dbscan(seed, count, q, min_samples, ragged, integral):
    """Real-valued layer4-like points against the two separate calls; integer points (where even pairs at
    exactly ε are decided identically by every library) against scikit-learn too. (For real-valued points
    at exactly ε — ε is itself a distance — scikit-learn's verdict depends on its BLAS's summation order.)"""
    points = helpers.layer4_like(3, count, seed=seed % 1000)
    if integral:
        points = np.round(points)
    valid = np.random.default_rng(seed).random((3, count)) < 0.8 if ragged else np.ones((3, count), dtype=bool)
    valid[:, :2] = True
    labels, eps = quantile_dbscan(torch.from_numpy(points), q, min_samples, valid=torch.from_numpy(valid), eps_floor=1e-3)
    expected_eps = np.maximum(pairwise_quantile(points, q, valid), 1e-3)
    np.testing.assert_array_equal(eps.numpy(), expected_eps)
    separate = dbscan(points, expected_eps, min_samples, backend="torch", valid=valid)
    np.testing.assert_array_equal(labels.numpy(), separate)
    if integral:
        np.testing.assert_array_equal(separate, helpers.sklearn_labels(points, expected_eps, min_samples, valid))


def test_eps_floor_rule_and_single_point_problems():
    """ε = max(quantile, eps_floor); a problem with < 2 valid points has no distance: ε = eps_floor."""
    points = np.zeros((3, 5, 2))
    points[0] = np.arange(10.0).reshape(5, 2)
    points[2, :, 0] = np.arange(5.0) * 1e-4
    valid = np.ones((3, 5), dtype=bool)
    valid[1, 1:] = False  # one point
    labels, eps = quantile_dbscan(points, 0.5, 1, valid=valid, eps_floor=0.5)
    assert eps[0] == pairwise_quantile(points[0], 0.5) and eps[1] == 0.5 and eps[2] == 0.5  # floor above quantile
    np.testing.assert_array_equal(labels, helpers.sklearn_labels(points, eps, 1, valid))
    np.testing.assert_array_equal(labels[1], [0, -1, -1, -1, -1])


def test_devices_parameters_shapes_and_backends():
    points = torch.from_numpy(helpers.layer4_like(2, 64, seed=3))
    min_samples = torch.tensor([3, 5])  # on the device, validated there
    labels, eps = quantile_dbscan(points, 0.25, min_samples)
    assert labels.dtype == torch.int64 and labels.shape == (2, 64) and eps.dtype == torch.float64
    for backend in ("sklearn", "torch", "auto"):
        other, other_eps = quantile_dbscan(points, 0.25, min_samples, backend=backend)
        assert torch.equal(other, labels) and torch.equal(other_eps, eps)
    single, single_eps = quantile_dbscan(points[0].numpy(), 0.25, 3)  # (N, D) numpy in -> (N,), 0-d numpy out
    assert isinstance(single, np.ndarray) and single.shape == (64,) and single_eps.shape == ()
    np.testing.assert_array_equal(single, labels[0].numpy())
    empty, empty_eps = quantile_dbscan(torch.zeros(2, 0, 3), 0.25, 2, eps_floor=1.0)
    assert empty.shape == (2, 0) and empty_eps.tolist() == [1.0, 1.0]


def test_duplicates_fall_back_exactly():
    """More than a fraction q of duplicate pairs: ties at the quantile overflow the fixed capacities, and the
    fallback (recomputing that problem with every pair) still gives numpy's and scikit-learn's answers."""
    points = helpers.layer4_like(2, 300, seed=4)
    points[:, :40] = 0.0  # 40 dead channels: 1,560 ordered pairs at distance 0
    retried = engine.retried_problems
    labels, eps = quantile_dbscan(points, 0.001, 4, eps_floor=1e-5)
    assert engine.retried_problems > retried
    assert eps.tolist() == [1e-5, 1e-5]  # the quantile is 0
    np.testing.assert_array_equal(pairwise_quantile(points, 0.001), [0.0, 0.0])
    np.testing.assert_array_equal(labels, helpers.sklearn_labels(points, eps, 4))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(q=25), ValueError, r"\[0, 1\]"),
        (dict(eps_floor=-1.0), ValueError, "eps_floor"),
        (dict(eps_floor=math.nan), ValueError, "eps_floor"),
        (dict(min_samples=torch.tensor([2.5, 2.0])), TypeError, "integer"),
        (dict(min_samples=torch.tensor([0, 2])), ValueError, "min_samples must be >= 1"),
        (dict(min_samples=torch.tensor([1, 2, 3])), ValueError, "one per problem"),
        (dict(backend="gpu"), ValueError, "backend must be one of"),
        (dict(eps_floor=0.0, points=np.zeros((2, 5, 3))), ValueError, "eps is 0"),
        (dict(points=np.full((2, 5, 3), np.nan)), ValueError, "NaN or Inf"),
    ],
)
def test_bad_input(kwargs, error, match):
    arguments = dict(points=np.random.default_rng(0).normal(size=(2, 5, 3)), q=0.5, min_samples=2, eps_floor=1e-5)
    arguments.update(kwargs)
    points, q, min_samples = arguments.pop("points"), arguments.pop("q"), arguments.pop("min_samples")
    with pytest.raises(error, match=match):
        quantile_dbscan(points, q, min_samples, **arguments)


def test_dbscan_device_eps_validated_in_the_one_read():
    points = torch.randn(2, 10, 3)
    with pytest.raises(ValueError, match="eps must be > 0"):
        dbscan(points, torch.tensor([1.0, -1.0]), 2, backend="torch")
    with pytest.raises(ValueError, match="NaN"):
        dbscan(points, torch.tensor([1.0, math.nan]), 2, backend="torch")
    np.testing.assert_array_equal(
        dbscan(points, torch.tensor([1.0, 2.0]), torch.tensor([2, 3]), backend="torch").numpy(),
        helpers.sklearn_labels(points.double().numpy(), [1.0, 2.0], [2, 3]),
    )

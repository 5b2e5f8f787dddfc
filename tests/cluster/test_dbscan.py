"""fastcam.cluster.dbscan against scikit-learn, label for label (moved from tests/test_cluster.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastcam.cluster import dbscan, pairwise_quantile
from fastcam.cluster.dbscan import cuml_available
from fastcam_testkit import cluster as helpers

sklearn_labels = helpers.sklearn_labels
SETTINGS = dict(deadline=None, max_examples=20, suppress_health_check=[HealthCheck.too_slow])


def torch_labels(points: np.ndarray, eps, min_samples, valid=None, **kwargs) -> np.ndarray:
    """The torch backend on a CPU tensor (tensor in -> tensor out), as numpy for comparison."""
    labels = dbscan(
        torch.from_numpy(points),
        torch.as_tensor(np.asarray(eps, dtype=np.float64)),
        min_samples,
        backend="torch",
        valid=None if valid is None else torch.from_numpy(valid),
        **kwargs,
    )
    assert isinstance(labels, torch.Tensor) and labels.dtype == torch.int64
    return labels.numpy()


# ---------------------------------------------------------------------------------------------------------
# strategies


@st.composite
def integer_problems(draw, max_points: int = 40, max_dims: int = 20):
    """Small integer coordinates with ε = √k: distances tie ε exactly all the time (and both of
    scikit-learn's paths are exercised: KD-tree for D <= 15 and n >= 12, brute force otherwise)."""
    batch = draw(st.integers(1, 3))
    count = draw(st.integers(1, max_points))
    dims = draw(st.sampled_from([1, 2, 3, 5, 16, max_dims]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    spread = draw(st.integers(1, 4))
    points = rng.integers(-spread, spread + 1, size=(batch, count, dims)).astype(np.float64)
    eps = np.sqrt(rng.integers(1, 4 * dims + 1, size=batch).astype(np.float64))
    min_samples = rng.integers(1, 8, size=batch)
    return points, eps, min_samples


@st.composite
def blob_problems(draw):
    """Gaussian blobs + uniform noise + exact duplicates, real-valued, in float32 (CF-CAM's dtype)."""
    batch = draw(st.integers(1, 3))
    count = draw(st.integers(2, 60))
    dims = draw(st.sampled_from([2, 4, 17, 49]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(batch, 4, dims)) * 4
    member = rng.integers(0, 4, size=(batch, count))
    points = np.take_along_axis(centres, member[..., None], 1) + rng.normal(size=(batch, count, dims))
    noise = rng.random((batch, count)) < draw(st.sampled_from([0.0, 0.2, 1.0]))
    points[noise] = rng.uniform(-8, 8, size=(int(noise.sum()), dims))
    duplicates = rng.random((batch, count)) < 0.2
    source = rng.integers(0, count, size=(batch, count))
    points = np.where(duplicates[..., None], np.take_along_axis(points, source[..., None], 1), points)
    points = points.astype(np.float32)
    eps = rng.uniform(0.5, 2.5, size=batch) * math.sqrt(dims)
    min_samples = rng.integers(1, 10, size=batch)
    return points, eps, min_samples


# ---------------------------------------------------------------------------------------------------------
# DBSCAN parity


@settings(**SETTINGS)
@given(integer_problems())
def test_exact_ties_match_sklearn(problem):
    points, eps, min_samples = problem
    expected = sklearn_labels(points, eps, min_samples)
    np.testing.assert_array_equal(torch_labels(points, eps, min_samples), expected)
    np.testing.assert_array_equal(dbscan(points, eps, min_samples, backend="sklearn"), expected)


@settings(**SETTINGS)
@given(blob_problems())
def test_blobs_noise_duplicates_match_sklearn(problem):
    points, eps, min_samples = problem
    np.testing.assert_array_equal(torch_labels(points, eps, min_samples), sklearn_labels(points, eps, min_samples))


@settings(**SETTINGS)
@given(integer_problems(max_points=30), st.integers(0, 2**32 - 1), st.booleans())
def test_ragged_batches_padding_never_matters(problem, seed, poison):
    points, eps, min_samples = problem
    rng = np.random.default_rng(seed)
    valid = rng.random(points.shape[:2]) < 0.7
    expected = sklearn_labels(points, eps, min_samples, valid)
    padded = points.copy()
    padded[~valid] = np.nan if poison else 1e6  # padding may hold anything
    np.testing.assert_array_equal(torch_labels(padded, eps, min_samples, valid), expected)
    np.testing.assert_array_equal(dbscan(padded, eps, min_samples, backend="sklearn", valid=valid), expected)
    assert (expected[~valid] == -1).all()


@settings(**SETTINGS)
@given(integer_problems(max_points=24, max_dims=3))
def test_eps_from_pairwise_quantile_ties(problem):
    """CF-CAM's rule: ε is itself one of the distances (ties at ε by construction)."""
    points, _, min_samples = problem
    if points.shape[1] < 2:
        return
    eps = pairwise_quantile(points, 0.25)
    eps[eps == 0] = 1.0  # more than a quarter of the pairs are duplicates: ε = 0 is (rightly) refused
    np.testing.assert_array_equal(torch_labels(points, eps, min_samples), sklearn_labels(points, eps, min_samples))


def _two_clusters_and_a_shared_border() -> tuple[np.ndarray, int]:
    """1-D: cluster A = {-1, -1, -1, 0}, border p = 2, cluster B = {4, 5, 5, 5}; ε = 2 (ties at exactly ε),
    min_samples = 4. p's neighbours are {0, 2, 4} (3 < 4, not core) and both 0 and 4 are core."""
    line = np.array([-1, -1, -1, 0, 2, 4, 5, 5, 5], dtype=np.float64)
    return line, 4


@settings(deadline=None, max_examples=25)
@given(st.permutations(list(range(9))), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_border_point_between_two_clusters_in_every_order(order, dims, seed):
    line, border = _two_clusters_and_a_shared_border()
    rng = np.random.default_rng(seed)
    # embed the line along a random signed axis of a D-dim integer lattice, shifted: distances unchanged
    axis = rng.integers(dims)
    points = np.zeros((9, dims)) + rng.integers(-3, 4, size=dims)
    points[:, axis] += line * rng.choice([-1, 1])
    points = points[list(order)][None]
    expected = sklearn_labels(points, 2.0, 4)
    where_border = list(order).index(border)
    assert expected[0, where_border] == 0  # the lowest-numbered of the two adjacent clusters
    assert sorted(set(expected[0])) == [0, 1]
    np.testing.assert_array_equal(torch_labels(points, [2.0], 4), expected)


def test_per_problem_eps_and_min_samples_and_batched_equals_single():
    rng = np.random.default_rng(3)
    points = np.round(rng.normal(size=(5, 40, 3)) * 2)
    eps = np.array([1.0, math.sqrt(2), math.sqrt(3), 2.0, 3.0])
    min_samples = np.array([1, 2, 3, 5, 8])
    expected = sklearn_labels(points, eps, min_samples)
    np.testing.assert_array_equal(torch_labels(points, eps, min_samples), expected)
    for b in range(5):  # (N, D) in -> (N,) out, numpy in -> numpy out
        single = dbscan(points[b], float(eps[b]), int(min_samples[b]), backend="torch")
        assert isinstance(single, np.ndarray) and single.shape == (40,)
        np.testing.assert_array_equal(single, expected[b])


def test_float64_recheck_decides_what_float32_cannot():
    """Distances 1 ± 1e-12 around ε = 1: float32 cannot tell them apart, the float64 re-check must."""
    points = np.array([[[0.0, 0.0], [1.0 + 1e-12, 0.0], [0.0, 1.0 - 1e-12], [5.0, 5.0]]])
    expected = sklearn_labels(points, 1.0, 2)
    np.testing.assert_array_equal(expected, [[0, -1, 0, -1]])
    np.testing.assert_array_equal(torch_labels(points, 1.0, 2), expected)


def test_tiny_and_huge_units():
    """Power-of-two scaling keeps float32 in range: the answer does not depend on the units."""
    rng = np.random.default_rng(7)
    base = np.round(rng.normal(size=(2, 50, 4)) * 2)
    expected = sklearn_labels(base, 2.0, 3)
    for unit in (2.0**-60, 2.0**60):
        np.testing.assert_array_equal(torch_labels(base * unit, 2.0 * unit, 3), expected)


def test_chunking_over_problems_changes_nothing():
    rng = np.random.default_rng(11)
    points = np.round(rng.normal(size=(7, 33, 3)) * 2)
    expected = sklearn_labels(points, math.sqrt(2), 3)
    tiny_budget = torch_labels(points, math.sqrt(2), 3, memory_budget_bytes=1)  # one problem per chunk
    np.testing.assert_array_equal(tiny_budget, expected)


def test_line_needs_many_propagation_rounds():
    """A long chain (worst case for label propagation) numbered from its middle."""
    order = np.random.default_rng(0).permutation(300)
    points = np.arange(300, dtype=np.float64)[order][None, :, None]
    expected = sklearn_labels(points, 1.0, 2)
    np.testing.assert_array_equal(torch_labels(points, 1.0, 2), expected)
    assert (expected == 0).all()


def test_huge_eps_and_edge_sizes():
    points = np.random.default_rng(0).normal(size=(2, 6, 3))
    np.testing.assert_array_equal(torch_labels(points, 1e300, 3), np.zeros((2, 6), dtype=np.int64))  # ε² = inf
    np.testing.assert_array_equal(torch_labels(points, 1e300, 3), sklearn_labels(points, 1e300, 3))
    one = np.zeros((3, 1, 2))
    np.testing.assert_array_equal(torch_labels(one, 1.0, [1, 2, 1]), [[0], [-1], [0]])
    np.testing.assert_array_equal(torch_labels(one, 1.0, 1), sklearn_labels(one, 1.0, 1))
    empty = dbscan(torch.zeros(2, 0, 3), 1.0, 1, backend="torch")
    assert empty.shape == (2, 0) and empty.dtype == torch.int64
    np.testing.assert_array_equal(
        dbscan(torch.zeros(2, 4, 3), 1.0, 2, backend="torch", valid=torch.zeros(2, 4, dtype=torch.bool)), -np.ones((2, 4))
    )


@pytest.mark.parametrize("backend", ["auto", "torch", "sklearn"])
def test_output_type_and_device(backend, device):
    points = torch.randn(3, 20, 4, device=device)
    labels = dbscan(points, 1.5, 3, backend=backend)
    assert isinstance(labels, torch.Tensor) and labels.dtype == torch.int64 and labels.device == points.device
    assert labels.shape == (3, 20)
    np.testing.assert_array_equal(labels.cpu().numpy(), sklearn_labels(points.cpu().double().numpy(), 1.5, 3))


def test_integer_points_accepted_like_sklearn():
    points = np.random.default_rng(1).integers(-3, 4, size=(2, 30, 2))
    np.testing.assert_array_equal(dbscan(points, 1.5, 3, backend="torch"), sklearn_labels(points.astype(float), 1.5, 3))


# ---------------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "points, eps, min_samples, kwargs, error, match",
    [
        (np.full((1, 4, 2), np.nan), 1.0, 2, {}, ValueError, "NaN or Inf"),
        (np.array([[[0.0, np.inf], [1.0, 1.0]]]), 1.0, 2, {}, ValueError, "NaN or Inf"),
        (np.zeros((1, 4, 2)), 0.0, 2, {}, ValueError, "eps must be > 0"),
        (np.zeros((1, 4, 2)), -1.0, 2, {}, ValueError, "eps must be > 0"),
        (np.zeros((1, 4, 2)), math.nan, 2, {}, ValueError, "NaN"),
        (np.zeros((1, 4, 2)), math.inf, 2, {}, ValueError, "finite"),
        (np.zeros((2, 4, 2)), [1.0, 2.0, 3.0], 2, {}, ValueError, "one per problem"),
        (np.zeros((1, 4, 2)), 1.0, 0, {}, ValueError, "min_samples must be >= 1"),
        (np.zeros((1, 4, 2)), 1.0, 2.5, {}, TypeError, "integer"),
        (np.zeros((1, 4, 2)), 1.0, True, {}, TypeError, "bool"),
        (np.zeros((1, 4, 0)), 1.0, 2, {}, ValueError, "D = 0"),
        (np.zeros((4,)), 1.0, 2, {}, ValueError, "shape"),
        (np.zeros((1, 2, 3, 4)), 1.0, 2, {}, ValueError, "shape"),
        (np.zeros((2, 4, 2)), 1.0, 2, {"valid": np.ones((2, 5), dtype=bool)}, ValueError, "valid must have shape"),
        (np.zeros((2, 4, 2)), 1.0, 2, {"valid": np.ones((2, 4))}, TypeError, "boolean"),
        (np.zeros((1, 4, 2)), 1.0, 2, {"backend": "gpu"}, ValueError, "backend must be one of"),
        (np.zeros((1, 4, 2)), 1.0, 2, {"backend": "cuml"}, ValueError, "CUDA"),
        (np.zeros((1, 4, 2), dtype=complex), 1.0, 2, {}, TypeError, "real"),
        ([[0.0, 1.0]], 1.0, 2, {}, TypeError, "numpy.ndarray"),
    ],
)
def test_bad_input(points, eps, min_samples, kwargs, error, match):
    with pytest.raises(error, match=match):
        dbscan(points, eps, min_samples, **kwargs)


def test_nan_in_padding_is_fine_but_not_in_valid_points():
    points = np.zeros((1, 3, 2))
    points[0, 2] = np.nan
    np.testing.assert_array_equal(dbscan(points, 1.0, 2, valid=np.array([[True, True, False]])), [[0, 0, -1]])
    with pytest.raises(ValueError, match="NaN or Inf"):
        dbscan(points, 1.0, 2, backend="torch")


@pytest.mark.skipif(
    not (cuml_available() and torch.cuda.is_available()),
    reason="cuML is not installable on our CI or GPU machines: the cuml backend is UNTESTED here",
)
def test_cuml_backend_cores_match_sklearn():  # pragma: no cover - needs cuML
    """cuML's core points and cluster partition of core points must match; border points may differ."""
    rng = np.random.default_rng(0)
    points = rng.normal(size=(3, 200, 8))
    expected = sklearn_labels(points, 2.5, 5)
    labels = dbscan(torch.from_numpy(points).cuda(), 2.5, 5, backend="cuml").cpu().numpy()
    assert ((labels == -1) == (expected == -1)).mean() > 0.95


def test_tf32_setting_is_overridden_locally_and_restored():
    """TF32 would widen the float32 error band enormously: the GEMM runs in IEEE float32 regardless,
    and the caller's global setting is left as found."""
    rng = np.random.default_rng(2)
    points = np.round(rng.normal(size=(3, 40, 3)) * 2)
    expected = sklearn_labels(points, math.sqrt(2), 3)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        np.testing.assert_array_equal(torch_labels(points, math.sqrt(2), 3), expected)
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)

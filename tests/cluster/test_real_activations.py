"""DBSCAN and the quantile on real (random-weight ResNet-50 layer4) activations, against scikit-learn and
numpy, with the ε-graph checked symmetric.

Issue 11: on such activations the torch backend labelled a border point as noise where scikit-learn did
not. Its only core neighbour lay 4e-4 (relative) inside ε. The float32 error bound of the ε-graph is per
row, so the pair was "uncertain" for the border point's row and decided outright for the core point's
row; the old `i < j` filter then re-checked it for neither row and the adjacency came out asymmetric.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import DBSCAN

import fastcam.cluster._torch_dbscan as engine
from fastcam.cluster import dbscan, pairwise_quantile, quantile_dbscan
from fastcam_testkit import cluster as helpers


D = 49
UNIT = 2.0**-24  # IEEE float32 unit roundoff
ROW_BOUND = 2 * (3 * D + 12) * UNIT  # the per-row bound factor of the old float32 ε-graph (a1900d3)


def cfcam_min_samples(count: int) -> int:
    return max(2, int(0.05 * count))


def adjacency(points: np.ndarray, eps: np.ndarray | None = None, q: float | None = None) -> torch.Tensor:
    """The ε-graph as dbscan builds it (given eps) or as quantile_dbscan builds it (ε = the q-quantile)."""
    x = torch.from_numpy(points).double()
    eps = None if eps is None else torch.as_tensor(eps)
    graph, ok = engine.epsilon_adjacency(x, torch.ones(x.shape[:2], dtype=torch.bool), eps, q)
    assert bool(ok.all())
    return graph


@pytest.fixture(scope="module")
def layer4() -> np.ndarray:
    """(3, 2048, 49): one random-weight ResNet-50, three random 224 px images."""
    return helpers.resnet50_layer4(3)


def _border_point_in_the_asymmetric_band(x: np.ndarray, seed: int) -> tuple[np.ndarray, float, int, int]:
    """2,048 real channels plus one made-up point p at distance ε(1 − r) of the core point c nearest the
    centroid and farther than ε from every other point, with r where c's row decided the pair outright but
    p's row (p lies farther from the centroid, so its row bound was larger) found it uncertain."""
    x = x.astype(np.float64)
    eps = float(pairwise_quantile(x, 0.25))
    min_samples = cfcam_min_samples(len(x) + 1)
    core = np.zeros(len(x), dtype=bool)
    core[DBSCAN(eps=eps, min_samples=min_samples).fit(x).core_sample_indices_] = True
    c = int(np.flatnonzero(core)[np.argmin(np.linalg.norm(x[core] - x.mean(0), axis=1))])
    rng = np.random.default_rng(seed)
    for _ in range(20):  # a random direction: p's only neighbour is c (checked)
        u = rng.normal(size=D)
        u /= np.linalg.norm(u)
        far = np.linalg.norm(x - (x[c] + u * eps), axis=1) > eps * 1.01
        far[c] = True
        if far.all():
            break
    else:  # pragma: no cover - data-dependent
        pytest.skip("no direction isolates the made-up point")
    points = []
    for fraction in (0.5, 0.8):
        p = x[c] + u * eps
        for _ in range(2):  # the window depends (barely) on p through the centroid and max norm
            y = np.vstack([x, p[None]])
            nu = ((y - y.mean(0)) ** 2).sum(1)
            low = ROW_BOUND * (nu[c] + nu.max()) / eps**2  # 2r above this: c's row decided "neighbour"
            high = ROW_BOUND * (nu[-1] + nu.max()) / eps**2  # 2r below this: p's row was uncertain
            r = (low + fraction * (high - low)) / 2
            p = x[c] + u * eps * (1 - r)
        points.append(np.vstack([x, p[None]]))
    return np.stack(points), eps, min_samples, c


def test_border_point_inside_the_asymmetric_band_is_not_noise(layer4):
    points, eps, min_samples, c = _border_point_in_the_asymmetric_band(layer4[0], 0)
    expected = helpers.sklearn_labels(points, eps, min_samples)
    assert (expected[:, -1] == expected[:, c]).all() and (expected[:, -1] >= 0).all()  # p is a border point
    labels = dbscan(torch.from_numpy(points), eps, min_samples, backend="torch").numpy()
    np.testing.assert_array_equal(labels, expected)
    helpers.assert_symmetric(adjacency(points, np.full(len(points), eps)))


@pytest.mark.parametrize("q, min_samples, images", [(0.25, cfcam_min_samples(2048), 3), (0.02, 4, 2)])
def test_real_activations_match_sklearn_label_for_label(layer4, q, min_samples, images):
    """CF-CAM's rule (q = 0.25, min_samples = 102: one big cluster, border and noise points) and a small ε
    (q = 0.02, min_samples = 4: many clusters); one shared-distance call per batch, no fallback."""
    retried = engine.retried_problems
    layer4 = layer4[:images]
    labels, eps = quantile_dbscan(torch.from_numpy(layer4), q, min_samples)
    expected = helpers.sklearn_labels(layer4, eps.numpy(), min_samples)
    np.testing.assert_array_equal(labels.numpy(), expected)
    shared = adjacency(layer4, q=q)  # the band taken from the quantile's bracket ...
    helpers.assert_symmetric(shared)
    assert torch.equal(shared, adjacency(layer4, eps.numpy()))  # ... gives dbscan's own ε-graph
    assert engine.retried_problems == retried  # the fixed-shape path sufficed


def test_real_activation_quantile_is_numpy_bit_for_bit(layer4):
    assert pairwise_quantile(layer4[0], 0.25) == helpers.numpy_quantile(layer4[0], 0.25)


def test_beyond_2048_channels_match_sklearn():
    """N = 3,072 synthetic layer4-like activations (heavy-tailed, sparse, dead and duplicate channels)."""
    x = helpers.layer4_like(1, 3072, seed=3)
    min_samples = cfcam_min_samples(x.shape[1])
    labels, eps = quantile_dbscan(x, 0.25, min_samples)
    np.testing.assert_array_equal(labels, helpers.sklearn_labels(x, eps, min_samples))
    helpers.assert_symmetric(adjacency(x, q=0.25))

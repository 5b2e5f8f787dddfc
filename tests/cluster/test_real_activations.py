"""DBSCAN on real (random-weight ResNet-50 layer4) activations, label for label against scikit-learn.

Issue 11: on such activations the torch backend labelled a border point as noise where scikit-learn did
not. Its only core neighbour lay 4e-4 (relative) inside ε. The float32 error bound of the ε-graph is per
row, so the pair was "uncertain" for the border point's row and decided outright for the core point's
row; the old `i < j` filter then re-checked it for neither row and the adjacency came out asymmetric.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sklearn.cluster import DBSCAN

from fastcam.cluster import dbscan, pairwise_quantile

if "_cluster_test_helpers" not in sys.modules:  # helpers live next to the tests (importlib import mode)
    _spec = importlib.util.spec_from_file_location("_cluster_test_helpers", Path(__file__).with_name("helpers.py"))
    sys.modules["_cluster_test_helpers"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["_cluster_test_helpers"])
helpers = sys.modules["_cluster_test_helpers"]

D = 49
UNIT = 2.0**-24  # IEEE float32 unit roundoff
ROW_BOUND = 2 * (3 * D + 12) * UNIT  # per-row bound factor of the float32 ε-graph (fastcam.cluster._gemm)


def cfcam_min_samples(count: int) -> int:
    return max(2, int(0.05 * count))


def _border_point_in_the_asymmetric_band(seed: int) -> tuple[np.ndarray, float, int, int]:
    """2,048 real channels plus one made-up point p at distance ε(1 − r) of the core point c nearest the
    centroid and farther than ε from every other point, with r where c's row decides the pair outright but
    p's row (p lies farther from the centroid, so its row bound is larger) finds it uncertain."""
    x = helpers.resnet50_layer4(seed).astype(np.float64)
    eps = float(pairwise_quantile(x, 0.25))
    min_samples = cfcam_min_samples(len(x) + 1)
    core = np.zeros(len(x), dtype=bool)
    core[DBSCAN(eps=eps, min_samples=min_samples).fit(x).core_sample_indices_] = True
    c = int(np.flatnonzero(core)[np.argmin(np.linalg.norm(x[core] - x.mean(0), axis=1))])
    rng = np.random.default_rng(seed)
    points = []
    for _ in range(20):  # a random direction: p's only neighbour is c (checked)
        u = rng.normal(size=D)
        u /= np.linalg.norm(u)
        far = np.linalg.norm(x - (x[c] + u * eps), axis=1) > eps * 1.01
        far[c] = True
        if far.all():
            break
    else:  # pragma: no cover - data-dependent
        pytest.skip("no direction isolates the made-up point")
    for fraction in (0.2, 0.5, 0.8):
        p = x[c] + u * eps
        for _ in range(2):  # the window depends (barely) on p through the centroid and max norm
            y = np.vstack([x, p[None]])
            nu = ((y - y.mean(0)) ** 2).sum(1)
            low = ROW_BOUND * (nu[c] + nu.max()) / eps**2  # 2r above this: c's row decides "neighbour"
            high = ROW_BOUND * (nu[-1] + nu.max()) / eps**2  # 2r below this: p's row is uncertain
            r = (low + fraction * (high - low)) / 2
            p = x[c] + u * eps * (1 - r)
        points.append(np.vstack([x, p[None]]))
    return np.stack(points), eps, min_samples, c


@pytest.mark.parametrize("seed", [0, 1])
def test_border_point_inside_the_asymmetric_band_is_not_noise(seed):
    points, eps, min_samples, c = _border_point_in_the_asymmetric_band(seed)
    expected = helpers.sklearn_labels(points, eps, min_samples)
    assert (expected[:, -1] == expected[:, c]).all() and (expected[:, -1] >= 0).all()  # p is a border point
    labels = dbscan(torch.from_numpy(points), eps, min_samples, backend="torch").numpy()
    np.testing.assert_array_equal(labels, expected)

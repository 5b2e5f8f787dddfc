"""Oracles and data for the fastcam.cluster tests.

* `sklearn_labels`: scikit-learn's DBSCAN on each problem's valid points, in float64 (the label oracle).
* `numpy_quantile`: `np.quantile` of the explicit off-diagonal distance matrix, built in row blocks so
  that N = 2,048 fits in memory (numpy reduces the last axis per row, so blocks give the same bits).
* `resnet50_layer4`: real post-ReLU activations of a random-weight ResNet-50 (`fastcam.models`) at 224 px:
  2,048 channels × 49 positions, heavy-tailed, ~1/3 zeros, ~5% dead (all-zero, duplicate) channels.
* `layer4_like`: a fast synthetic generator with the same traits, for many seeds.
* `assert_symmetric`: the ε-graph of DBSCAN must be symmetric (a pair decided once, for both rows).
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from sklearn.cluster import DBSCAN




def sklearn_labels(points: np.ndarray, eps: Any, min_samples: Any, valid: np.ndarray | None = None) -> np.ndarray:
    """The oracle: sklearn.cluster.DBSCAN on each problem's valid points, float64."""
    batch, count, _ = points.shape
    eps = np.broadcast_to(np.asarray(eps, dtype=np.float64), (batch,))
    min_samples = np.broadcast_to(np.asarray(min_samples), (batch,))
    valid = np.ones((batch, count), dtype=bool) if valid is None else valid
    out = np.full((batch, count), -1, dtype=np.int64)
    for b in range(batch):
        keep = np.flatnonzero(valid[b])
        if keep.size:
            model = DBSCAN(eps=float(eps[b]), min_samples=int(min_samples[b]))
            out[b, keep] = model.fit(points[b, keep].astype(np.float64)).labels_
    return out


def explicit_distances(points: np.ndarray, block: int = 128) -> np.ndarray:
    """CF-CAM's reference N×N matrix sqrt(((x[:, None] - x[None]) ** 2).sum(-1)), in row blocks."""
    x = points.astype(np.float64)
    rows = [np.sqrt(((x[start : start + block, None] - x[None]) ** 2).sum(-1)) for start in range(0, len(x), block)]
    return np.concatenate(rows) if rows else np.zeros((0, 0))


def numpy_quantile(points: np.ndarray, q: float) -> float:
    """np.quantile (default "linear") of the off-diagonal entries of the explicit distance matrix."""
    distances = explicit_distances(points)
    return float(np.quantile(distances[~np.eye(len(points), dtype=bool)], q))


def assert_symmetric(adjacency: torch.Tensor) -> None:
    """The ε-neighbour relation is symmetric: every pair has one verdict, seen from both of its rows."""
    asymmetric = adjacency != adjacency.transpose(-1, -2)
    if bool(asymmetric.any()):
        where = torch.nonzero(asymmetric)[:5].tolist()
        raise AssertionError(f"ε-graph is not symmetric: {int(asymmetric.sum())} entries differ, e.g. {where}")


@functools.lru_cache(maxsize=None)
def resnet50_layer4(images: int = 3, seed: int = 0, size: int = 224) -> np.ndarray:
    """(images, 2048, 49) float32 layer4 activations of random images through one random ResNet-50."""
    from fastcam.models import resnet50

    torch.manual_seed(seed)
    model = resnet50().eval()
    batch = torch.randn(images, 3, size, size, generator=torch.Generator().manual_seed(seed + 1000))
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(batch))))
        x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return x.flatten(2).numpy()


def layer4_like(batch: int, channels: int, positions: int = 49, seed: int = 0) -> np.ndarray:
    """(B, C, hw) float32 synthetic post-ReLU activations: a few shared spatial factors with heavy-tailed
    (log-normal) channel gains, ReLU'd (about 40% zeros), 5% dead channels (exact duplicate zeros) and a
    few exactly duplicated live channels, as real layer4 outputs have."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(batch, 6, positions))
    loadings = rng.normal(size=(batch, channels, 6)) * rng.lognormal(0.0, 0.6, size=(batch, channels, 1))
    noise = rng.normal(size=(batch, channels, positions)) * rng.lognormal(-0.5, 0.5, size=(batch, channels, 1))
    pre = loadings @ factors + noise + rng.normal(0.8, 0.5, size=(batch, channels, 1))
    act = np.maximum(pre, 0.0) * 4.0
    act[rng.random((batch, channels)) < 0.05] = 0.0
    source = rng.integers(0, channels, size=(batch, channels))
    copy = rng.random((batch, channels)) < 0.02
    act = np.where(copy[..., None], np.take_along_axis(act, source[..., None], 1), act)
    return act.astype(np.float32)

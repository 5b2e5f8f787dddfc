"""Batched exact DBSCAN: one call clusters B independent point clouds.

Semantics (all backends except cuML's border points) are scikit-learn's, label for label:
a point's ε-neighbourhood includes itself and uses ‖x_i − x_j‖ <= ε (decided as squared distance
<= fl(ε·ε) in float64, which is what scikit-learn compares); a point is *core* when its neighbourhood
has at least `min_samples` points; clusters are the connected components of the core points under the
neighbour relation, numbered 0, 1, ... by their smallest core-point index; a non-core point adjacent to
at least one core point (a *border* point) takes the lowest cluster label among its core neighbours;
everything else is noise (-1).

The torch backend (`fastcam.cluster._torch_dbscan`) has fixed shapes and reads the host once per call:
the flags of every input check, capacity and convergence test come back together. ε and min_samples may
be device tensors (validated on the device, in that read). `quantile_dbscan` computes CF-CAM's ε (a
quantile of the pairwise distances) and the clustering from one distance GEMM.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fastcam.cluster._inputs import (
    ArrayLike,
    EpsLike,
    MinSamplesLike,
    Problem,
    check_eps,
    check_min_samples,
    check_points,
    check_quantile,
    eps_on_device,
    memory_budget,
    min_samples_on_device,
    require_finite,
)
from fastcam.ops._checks import check_choice, check_real

BACKENDS = ("auto", "torch", "sklearn", "cuml")


@functools.lru_cache(maxsize=None)
def cuml_available() -> bool:
    """True when `cuml.cluster.DBSCAN` imports (it never does on our CI / GPU machines)."""
    try:
        from cuml.cluster import DBSCAN  # noqa: F401
    except Exception:
        return False
    return True


def resolve_backend(backend: str, device: torch.device) -> str:
    """"auto" means the batched torch backend for CUDA tensors and the scikit-learn loop on the CPU."""
    check_choice("backend", backend, BACKENDS)
    if backend == "auto":
        return "torch" if device.type == "cuda" else "sklearn"
    if backend == "cuml":
        if device.type != "cuda":
            raise ValueError("backend='cuml' needs CUDA points (torch CUDA tensor or CuPy array)")
        if not cuml_available():
            raise RuntimeError("backend='cuml' was asked for but cuML (cuml.cluster.DBSCAN) is not importable")
    return backend


def dbscan(
    points: ArrayLike,
    eps: EpsLike,
    min_samples: MinSamplesLike,
    backend: str = "auto",
    valid: ArrayLike | None = None,
    *,
    memory_budget_bytes: int | None = None,
) -> Any:
    """Cluster B independent problems with DBSCAN (scikit-learn semantics, label for label).

    Args:
        points: (B, N, D) or (N, D) torch tensor (CPU or CUDA), numpy array, or CuPy array.
            Integer/bool/float32 points are widened to float64 (exactly), as scikit-learn does.
        eps: neighbourhood radius, > 0: a scalar or one per problem (B,).
        min_samples: core threshold (the point itself counts), >= 1: an int or one per problem (B,).
        backend: "auto" (torch for CUDA tensors, sklearn on CPU), "torch", "sklearn" or "cuml".
            "torch" makes one host read per call (no other sync) and no data-dependent shapes.
        valid: optional (B, N) bool mask for ragged batches; invalid points get label -1, never
            influence any other point, and may hold any value (even NaN).
        memory_budget_bytes: torch backend only: cap on per-chunk temporaries (problems are processed
            in chunks so that B·N² never sits in memory at once).

    Returns:
        (B, N) int64 labels (-1 noise, clusters 0.. per problem), or (N,) for a (N, D) input:
        a torch tensor on the points' device for torch/CuPy input, a numpy array for numpy input.

    Raises:
        TypeError / ValueError: non-real or NaN/Inf points, D = 0, bad shapes, eps <= 0 or NaN,
            min_samples < 1 or non-integer, unknown backend.
    """
    problem = check_points(points, valid)
    batch, count, _ = problem.points.shape
    chosen = resolve_backend(backend, problem.device)
    if chosen == "torch":  # ε and min_samples stay on the device; one host read for every check
        radii = eps_on_device(eps, batch, problem.device)
        thresholds = min_samples_on_device(min_samples, batch, problem.device)
        if count == 0 or batch == 0:
            return problem.give_back(torch.empty(problem.valid.shape, dtype=torch.int64, device=problem.device))
        from fastcam.cluster._torch_dbscan import solve

        budget = memory_budget(problem.device, memory_budget_bytes)
        result = solve(problem, budget, eps=radii, min_samples=thresholds)
        return problem.give_back(result.labels)
    require_finite(problem)
    radii = check_eps(eps, batch)
    thresholds = check_min_samples(min_samples, batch)
    if count == 0 or batch == 0:
        labels = torch.empty(problem.valid.shape, dtype=torch.int64, device=problem.device)
    elif chosen == "sklearn":
        labels = _dbscan_sklearn(problem, radii, thresholds)
    else:
        labels = _dbscan_cuml(problem, radii, thresholds)
    return problem.give_back(labels)


def quantile_dbscan(
    points: ArrayLike,
    q: float,
    min_samples: MinSamplesLike,
    *,
    valid: ArrayLike | None = None,
    eps_floor: float = 0.0,
    backend: str = "auto",
    memory_budget_bytes: int | None = None,
) -> tuple[Any, Any]:
    r"""DBSCAN with CF-CAM's radius rule, ε_b = max(q-quantile of problem b's pairwise distances, eps_floor),
    from one computation of the B·N² distances.

    Equals, label for label and bit for bit,
    ``eps = max(pairwise_quantile(points, q, valid), eps_floor); dbscan(points, eps, min_samples, valid=valid)``
    (for a problem with fewer than 2 valid points, which has no pairwise distance, ε = eps_floor), but the
    torch backend computes the float32 distance GEMM once and reuses it for the quantile's selection and
    the ε-graph, keeps ε and min_samples on the device, and reads the host once per call (input checks,
    capacity and convergence flags), so it suits CUDA streams and fixed-shape batches.

    Args:
        points: (B, N, D) or (N, D) torch tensor (CPU or CUDA), numpy array, or CuPy array.
        q: quantile level in [0, 1] (numpy's "linear" method over the n(n−1) off-diagonal distances).
        min_samples: core threshold (self included), >= 1: an int or one per problem (B,), e.g. a device
            tensor (validated on the device, in the call's one host read).
        valid: optional (B, N) bool mask for ragged batches (padding may hold anything).
        eps_floor: lower bound on ε (>= 0); must be > 0 if a problem's quantile can be 0 (duplicates) or a
            problem has a single valid point.
        backend: "auto" = "torch" on every device (the quantile is computed by torch anyway, and sharing
            its distances makes it the fastest path on the CPU too), or "sklearn"/"cuml" for the DBSCAN step.
        memory_budget_bytes: torch only: cap on per-chunk temporaries.

    Returns:
        (labels, eps): (B, N) int64 labels as `dbscan` returns them, and (B,) float64 ε; (N,) and 0-d for a
        (N, D) input; numpy in -> numpy out.

    Raises:
        TypeError / ValueError: as `dbscan` and `pairwise_quantile`, and ε = 0 for a problem with valid points.
    """
    from fastcam.cluster._torch_dbscan import solve

    level = check_quantile(q)
    eps_floor = check_real("eps_floor", eps_floor, low=0)
    problem = check_points(points, valid)
    batch, count, _ = problem.points.shape
    chosen = "torch" if backend == "auto" else resolve_backend(backend, problem.device)
    thresholds = min_samples_on_device(min_samples, batch, problem.device)
    if count == 0 or batch == 0:
        labels = torch.empty(problem.valid.shape, dtype=torch.int64, device=problem.device)
        eps = torch.full((batch,), float(eps_floor), dtype=torch.float64, device=problem.device)
        return problem.give_back(labels), problem.give_back(eps)
    budget = memory_budget(problem.device, memory_budget_bytes)
    if chosen == "torch":
        result = solve(problem, budget, level=level, eps_floor=float(eps_floor), min_samples=thresholds,
                       caller="quantile_dbscan")
        return problem.give_back(result.labels), problem.give_back(result.eps)
    radii = solve(problem, budget, level=level, eps_floor=float(eps_floor), caller="quantile_dbscan").eps
    labels = dbscan(problem.points, radii, min_samples, backend=chosen, valid=problem.valid)
    return problem.give_back(labels), problem.give_back(radii)


def _dbscan_sklearn(problem: Problem, radii: np.ndarray, thresholds: np.ndarray) -> Tensor:
    """The reference: `sklearn.cluster.DBSCAN` on each problem's valid points, float64, one call each."""
    from sklearn.cluster import DBSCAN

    points = problem.points.cpu().numpy()  # explicit host copy: scikit-learn runs on the CPU
    valid = problem.valid.cpu().numpy()
    labels = np.full(valid.shape, -1, dtype=np.int64)
    for b in range(points.shape[0]):
        keep = np.flatnonzero(valid[b])
        if keep.size == 0:
            continue
        model = DBSCAN(eps=float(radii[b]), min_samples=int(thresholds[b]))
        labels[b, keep] = model.fit(points[b, keep]).labels_
    return torch.from_numpy(labels).to(problem.device)


def _dbscan_cuml(problem: Problem, radii: np.ndarray, thresholds: np.ndarray) -> Tensor:
    """`cuml.cluster.DBSCAN` on each problem's valid points (one call each; cuML has no batched input).

    UNTESTED HERE: cuML cannot be installed on our CI or GPU machines; written against cuML's documented
    API (DBSCAN(eps, min_samples, metric="euclidean", algorithm="brute", output_type, calc_core_sample_indices),
    fit_predict(X, out_dtype)). Points go in as float64 CUDA tensors via `__cuda_array_interface__`
    (zero-copy). cuML's core points and cluster membership follow the same definition, but its border
    points (non-core points next to two clusters) may get a different cluster than scikit-learn's, its
    cluster numbering is its own, and its Python layer passes eps to the C++ fit as a C `float` even for
    float64 points (cuML's dbscan.pyx: `cdef float eps = self.eps`), so pairs within ~1e-7 relative of
    eps may be decided differently; each call also syncs the device. Use the torch backend when
    label-for-label parity matters.
    """
    from cuml.cluster import DBSCAN

    labels = torch.full(problem.valid.shape, -1, dtype=torch.int64, device=problem.device)
    valid_rows = problem.valid.cpu()  # B·N bools, one small copy for the per-problem index lists
    for b in range(problem.points.shape[0]):
        keep = torch.nonzero(valid_rows[b]).squeeze(1).to(problem.device)
        if keep.numel() == 0:
            continue
        model = DBSCAN(
            eps=float(radii[b]),
            min_samples=int(thresholds[b]),
            metric="euclidean",
            algorithm="brute",
            output_type="cupy",
            calc_core_sample_indices=False,  # saves a host sync per call
        )
        found = model.fit_predict(problem.points[b, keep].contiguous(), out_dtype="int64")
        labels[b, keep] = torch.as_tensor(found, device=problem.device).to(torch.int64)
    return labels

"""The torch clustering path reads the host once per call and runs a bounded number of aten ops.

Counted on the CPU with `sync_count` (the calls that would sync or make data-dependent shapes on CUDA),
for a CF-CAM-shaped batch: B = 4 images, N = 384 channels (ResNet-18 layer4 at 224 px after the
importance split), D = 49, ragged (one image has fewer channels), min_samples and eps on the device.
"""
from __future__ import annotations

import pytest
import torch

from fastcam.cluster import dbscan, pairwise_quantile, quantile_dbscan
from fastcam_testkit import cluster as helpers

from fastcam_testkit import sync as sync_count

#: aten ops of one call at B = 4, N = 384, D = 49 (views included), with a little headroom; see the report
OP_BUDGET = {"quantile_dbscan": 850, "pairwise_quantile": 600, "dbscan": 450}


@pytest.fixture
def batch() -> dict:
    points = torch.from_numpy(helpers.layer4_like(4, 384, seed=11))
    valid = torch.ones(4, 384, dtype=torch.bool)
    valid[2, -7:] = False  # a ragged batch, as CF-CAM's importance split makes when norms tie
    min_samples = torch.tensor([19, 19, 18, 19])
    eps = pairwise_quantile(points, 0.25, valid)
    return dict(points=points, valid=valid, min_samples=min_samples, eps=eps)


CALLS = {
    "quantile_dbscan": lambda b: quantile_dbscan(b["points"], 0.25, b["min_samples"], valid=b["valid"], eps_floor=1e-5),
    "pairwise_quantile": lambda b: pairwise_quantile(b["points"], 0.25, b["valid"]),
    "dbscan": lambda b: dbscan(b["points"], b["eps"], b["min_samples"], backend="torch", valid=b["valid"]),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_one_host_read_and_bounded_ops(batch, name):
    CALLS[name](batch)  # warm-up (lazy imports)
    with sync_count.SyncCounter() as syncs, sync_count.OpCounter() as ops:
        CALLS[name](batch)
    assert syncs.total <= 1, syncs.sites
    assert syncs.counts == {"Tensor.tolist": 1}  # the call's one read of its flag tensor
    assert ops.total <= OP_BUDGET[name], ops.counts.most_common(12)
    assert ops.counts["aten.lift_fresh"] == 0  # no tensor literal: on CUDA its host-to-device copy syncs
    print(f"{name}: {syncs.total} host read, {ops.total} aten ops")


def test_counters_see_what_they_should():
    """The counters are not vacuous: each patched entry point counts, and everything is restored."""
    x = torch.arange(6.0)
    before = torch.Tensor.item
    with sync_count.SyncCounter() as syncs, sync_count.OpCounter() as ops:
        x.sum().item()
        bool(x.any())
        x[x > 2]  # boolean-mask indexing
        torch.nonzero(x)
        x.unique()
        x.tolist()
        x.cpu()
    assert syncs.counts == {"Tensor.item": 1, "Tensor.__bool__": 1, "mask-index": 1, "torch.nonzero": 1,
                            "Tensor.unique": 1, "Tensor.tolist": 1, "Tensor.cpu": 1}
    assert ops.total >= 6
    assert torch.Tensor.item is before

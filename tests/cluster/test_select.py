"""The fixed-shape primitives of fastcam.cluster against plain references (sort, nonzero, numpy)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcam.cluster._exact import numpy_pairwise_sum, sqrt_correctly_rounded
from fastcam.cluster._gemm import pair_keys
from fastcam.cluster._select import (
    MaskBuffer,
    compact,
    from_order_bits,
    order_bits,
    radix_select,
    to_float32_rounded,
)


@settings(deadline=None, max_examples=25)
@given(st.integers(1, 3000), st.integers(0, 2**32 - 1), st.sampled_from(["normal", "ties", "extremes"]))
def test_radix_select_equals_sort(length, seed, kind):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(3, length, generator=g) * torch.tensor([1e-30, 1.0, 1e30]).view(3, 1)
    if kind == "ties":
        keys = torch.round(keys[1:2] * 2).expand(3, -1).contiguous()
    elif kind == "extremes":
        keys[:, ::3] = math.inf
        keys[:, 1::5] = -math.inf
        keys[:, 2::7] = 0.0
    keys = keys + 0.0  # no −0.0 (it sorts before +0.0 in bit order; callers canonicalise)
    ranks = torch.randint(0, length, (3, 4), generator=g)
    expected = keys.sort(1).values.gather(1, ranks)
    assert torch.equal(radix_select(keys, ranks), expected)
    for digits, rest in ((1, 21), (2, 10)):  # early stop: floor and ceiling of the answer's bin
        bounds = radix_select(keys, ranks, digits=digits)
        assert (bounds[..., 0] <= expected).all() and (bounds[..., 1] >= expected).all()
        # exactly the bin: the order patterns with the answer's leading bits (±inf where they reach NaN)
        low = from_order_bits((order_bits(expected) >> rest) << rest)
        high = from_order_bits(((order_bits(expected) >> rest) << rest) | ((1 << rest) - 1))
        low = torch.where(low.isnan(), -math.inf, low)
        high = torch.where(high.isnan(), math.inf, high)
        assert torch.equal(bounds[..., 0], low) and torch.equal(bounds[..., 1], high)


@settings(deadline=None, max_examples=25)
@given(st.integers(1, 400), st.integers(1, 600), st.floats(0, 1), st.integers(0, 2**32 - 1))
def test_compact_equals_nonzero(words, capacity, density, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(3, 8 * words, generator=g) < density
    positions, count = compact(mask, capacity)
    assert positions.shape == (3, capacity)
    for b in range(3):
        expected = torch.nonzero(mask[b]).squeeze(1)
        assert count[b] == expected.numel()
        kept = min(capacity, expected.numel())
        assert torch.equal(positions[b, :kept], expected[:kept])
        assert (positions[b, kept:] == 0).all()


@pytest.mark.parametrize("count", [1, 7, 8, 9, 300, 2041])
def test_mask_buffer_rows_and_compaction(count):
    g = torch.Generator().manual_seed(count)
    buffer = MaskBuffer(2, count, torch.device("cpu"))
    values = torch.rand(2, count, count, generator=g) < 0.3
    buffer.mask.copy_(values)
    assert torch.equal(buffer.row_counts(), values.sum(-1))
    rows, cols, found = buffer.compact(count * count)
    for b in range(2):
        expected = torch.nonzero(values[b])
        assert found[b] == len(expected)
        assert torch.equal(torch.stack([rows[b, : len(expected)], cols[b, : len(expected)]], 1), expected)


def test_sqrt_is_ieee_like_numpy():
    """torch's vectorised CPU float64 sqrt is one ulp off for ~0.7% of inputs; the corrected one is not."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([
        torch.rand(200_000, dtype=torch.float64, generator=g) * 100,
        torch.arange(1000, dtype=torch.float64) ** 2,  # exact squares
        torch.rand(1000, dtype=torch.float64, generator=g) * 1e-310,  # subnormals
        torch.tensor([0.0, 2.0, 1e-300, 1e300, 2.0**-900, 2.0**-901], dtype=torch.float64),
    ])
    root, decided = sqrt_correctly_rounded(x)
    assert decided.all()
    np.testing.assert_array_equal(root.numpy(), np.sqrt(x.numpy()))


def test_float32_rounding_only_widens():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10_000, dtype=torch.float64, generator=g) * 10.0 ** torch.randint(-30, 30, (10_000,), generator=g)
    x = torch.cat([x, torch.tensor([0.0, 1e300, -1e300, math.inf, -math.inf], dtype=torch.float64)])
    down, up = to_float32_rounded(x, -math.inf), to_float32_rounded(x, math.inf)
    assert (down.double() <= x).all() and (up.double() >= x).all()
    assert down[-4] == torch.finfo(torch.float32).max and up[-4] == math.inf  # 1e300: beyond float32's range


@pytest.mark.parametrize("dims", [1, 7, 8, 49, 130, 300])
def test_numpy_pairwise_sum_order(dims):
    values = np.random.default_rng(dims).normal(size=(50, dims)) ** 2 * 10.0 ** np.random.default_rng(0).integers(-8, 8, size=(50, dims))
    np.testing.assert_array_equal(numpy_pairwise_sum(torch.from_numpy(values)).numpy(), values.sum(-1))


@settings(deadline=None, max_examples=20)
@given(st.integers(0, 2**32 - 1), st.sampled_from([2, 5, 49]), st.floats(1e-6, 1e6))
def test_key_error_bound_holds(seed, dims, unit):
    """|key − scale²·s| <= c(n_i + n_j) + tiny for every pair, s numpy's float64 squared distance."""
    rng = np.random.default_rng(seed)
    points = np.maximum(rng.normal(size=(2, 60, dims)), 0) * unit + rng.normal(size=(2, 1, dims)) * unit * 10
    keys = pair_keys(torch.from_numpy(points), torch.ones(2, 60, dtype=torch.bool))
    exact = ((points[:, :, None] - points[:, None]) ** 2).sum(-1) * (keys.scale.numpy() ** 2)[:, None, None]
    norms = keys.norms.double().numpy()
    bound = (norms[:, :, None] + norms[:, None]) * keys.coefficient + 2.0**-100
    off = ~np.eye(60, dtype=bool)
    assert (np.abs(keys.key.double().numpy() - exact)[:, off] <= bound[:, off]).all()

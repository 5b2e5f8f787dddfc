"""`fastcam.kernels.cfcam_filter` against its torch reference (`fastcam.ops.cluster_filter_weights`) and a
float64 per-image, per-cluster oracle, and CF-CAM with backend="triton" against backend="torch"."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from fastcam.kernels import cam_combine, cfcam_filter  # noqa: E402
from fastcam.kernels.cam_combine import combine  # noqa: E402
from fastcam.kernels.cfcam_filter import cfcam_combine, cluster_filter_weights  # noqa: E402
from fastcam_testkit.kernels import (  # noqa: E402
    INTERPRETER_TESTS,
    B,
    C,
    H,
    W,
    assert_close,
    combine_inputs,
    force_split,
    gen,
    h,
    poisoned,
    spy,
    w,
)

import fastcam  # noqa: E402
from fastcam.ops import IMPORTANT, NOISE  # noqa: E402
from fastcam.ops import cluster_filter_weights as cluster_filter_weights_reference  # noqa: E402
from fastcam.ops import combine as combine_reference  # noqa: E402

pytestmark = INTERPRETER_TESTS

# ------------------------------------------------------------------------------------ CF-CAM cluster filter


def _cfcam_inputs(dtype: torch.dtype = torch.float32, seed: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients with an O(1) per-channel offset (scores spread enough for the softmax to see every
    error) plus small spatial detail (so the reference filter's range term matters), and labels with
    important channels, noise, clusters of one and of many members, unused cluster ids, and an image
    whose channels are all noise (nothing kept: zero weights)."""
    g = gen(seed)
    grad = torch.randn(B, C, 1, 1, generator=g) + 0.05 * torch.randn(B, C, h, w, generator=g)
    labels = torch.randint(-2, 3, (B, C), generator=g)  # image 0: clusters 0, 1, 2
    labels[0, 5] = 3  # a one-member cluster
    labels[1] = torch.where(labels[1] >= 0, labels[1] * 3, labels[1])  # image 1: ids 0, 3, 6 only
    labels[2] = NOISE
    assert (labels[:2] == IMPORTANT).any() and (labels[:2] == NOISE).any()
    return grad.to(dtype), labels


def cfcam_weights_float64(grad: torch.Tensor, labels: torch.Tensor, variant: str, sigma: float,
                          range_sigma: float = 0.1, truncate: float = 4.0) -> torch.Tensor:
    """Independent oracle, one image and one cluster at a time in float64: the paper variant filters the
    cluster's mean gradient with scipy.ndimage.gaussian_filter (zero padding); the reference variant is
    the released code's `_bilateral_filter` (map-sized kernel, F.conv2d padding='same')."""
    from scipy.ndimage import gaussian_filter

    g = grad.double()
    height, width = g.shape[-2:]
    weights = torch.zeros(g.shape[:2], dtype=torch.float64)
    for b in range(g.shape[0]):
        scores = g[b].mean(dim=(1, 2))  # important channels keep their mean gradient
        for k in set(labels[b].tolist()) - {IMPORTANT, NOISE}:
            members = labels[b] == k
            mean_map = g[b, members].mean(dim=0)
            if variant == "paper":
                filtered = torch.from_numpy(gaussian_filter(mean_map.numpy(), sigma, mode="constant", truncate=truncate))
            else:
                x, y = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
                spatial = torch.exp(-((x - height / 2) ** 2 + (y - width / 2) ** 2) / (2 * sigma**2))
                kernel = spatial * torch.exp(-((mean_map - mean_map.mean()) ** 2) / (2 * range_sigma**2))
                kernel = kernel / (kernel.sum() + 1e-6)
                filtered = F.conv2d(mean_map[None, None], kernel[None, None], padding="same")
            scores[members] = filtered.mean()
        keep = labels[b] != NOISE
        if keep.any():
            weights[b, keep] = torch.softmax(scores[keep], dim=0)
    return weights


@pytest.mark.parametrize(
    "variant,dtype,options",
    [
        ("paper", torch.float32, {}),
        ("paper", torch.float16, {"sigma": 0.7, "truncate": 2.0}),
        ("reference", torch.float32, {}),
        ("reference", torch.bfloat16, {"sigma": 2.0, "range_sigma": 0.3}),
    ],
)
def test_cluster_filter_weights_match_reference_and_float64(variant, dtype, options):
    grad, labels = _cfcam_inputs(dtype)
    out = poisoned(B, C)
    got = cluster_filter_weights(grad, labels, variant=variant, out=out, **options)
    assert got.data_ptr() == out.data_ptr()
    assert_close(got, cluster_filter_weights_reference(grad, labels, variant=variant, **options))
    sigma = options.get("sigma", 1.0 if variant == "paper" else 5.0)
    oracle = cfcam_weights_float64(grad, labels, variant, sigma, options.get("range_sigma", 0.1), options.get("truncate", 4.0))
    assert_close(got, oracle.float())
    assert (got[labels == NOISE] == 0).all() and (got[2] == 0).all()
    torch.testing.assert_close(got[:2].sum(dim=1), torch.ones(2))
    # the scores really differ between clusters and important channels (the softmax is not flat)
    assert float(got[:2].max() / got[:2][labels[:2] != NOISE].min()) > 10


def test_cluster_filter_weights_float64_strided_int32_labels():
    grad, labels = _cfcam_inputs(torch.float64, seed=10)
    grad = grad.to(memory_format=torch.channels_last)
    labels = labels.to(torch.int32).t().contiguous().t()  # column-major labels
    assert not grad.is_contiguous() and not labels.is_contiguous()
    for variant in ("paper", "reference"):
        got = cluster_filter_weights(grad, labels, variant=variant)
        assert got.dtype == torch.float64
        assert_close(got, cluster_filter_weights_reference(grad.contiguous(), labels.long(), variant=variant), rtol=1e-12)


def test_cluster_filter_weights_all_important_and_bad_input():
    grad = torch.randn(2, 3, 4, 4, generator=gen(11))
    labels = torch.full((2, 3), IMPORTANT)
    assert_close(cluster_filter_weights(grad, labels), torch.softmax(grad.mean(dim=(2, 3)), dim=1))
    with pytest.raises(ValueError, match="labels"):
        cluster_filter_weights(grad, labels[:, :2])
    with pytest.raises(TypeError, match="labels"):
        cluster_filter_weights(grad, labels.float())
    with pytest.raises(ValueError, match="variant"):
        cluster_filter_weights(grad, labels, variant="bilateral")
    with pytest.raises(ValueError, match="out"):
        cluster_filter_weights(grad, labels, out=torch.empty(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="sigma"):
        cluster_filter_weights(grad, labels, sigma=0.0)
    with pytest.raises(ValueError, match="range_sigma"):
        cluster_filter_weights(grad, labels, variant="reference", range_sigma=float("nan"))


def test_cfcam_combine_matches_torch_path():
    grad, labels = _cfcam_inputs(torch.float32, seed=12)
    activations = torch.randn(B, C, h, w, generator=gen(13)).relu_().to(memory_format=torch.channels_last)
    weights, lowres, maps = cfcam_combine(activations, grad, labels, (H, W), variant="reference")
    ref_weights = cluster_filter_weights_reference(grad, labels, variant="reference")
    ref_lowres, ref_maps = combine_reference(activations, ref_weights, (H, W))
    assert_close(weights, ref_weights)
    assert_close(lowres, ref_lowres)
    assert_close(maps, ref_maps)
    assert (maps[2] == 0).all()  # nothing kept -> zero weights -> zero map, no NaN


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_cfcam_method_triton_equals_torch(variant, resnet, images, monkeypatch):
    targets = [0, 1, 2, 3]
    with fastcam.CFCAM(resnet, "layer4", variant=variant, backend="torch") as cam:
        expected = cam.explain(images, targets)
    combine_calls = spy(monkeypatch, cam_combine, "combine")
    filter_calls = spy(monkeypatch, cfcam_filter, "cluster_filter_weights")
    with fastcam.CFCAM(resnet, "layer4", variant=variant, backend="triton") as cam:
        got = cam.explain(images, targets)
    assert combine_calls == [1] and filter_calls == [1]
    assert_close(got.lowres, expected.lowres)
    assert_close(got.maps, expected.maps)


# ------------------------------------------------------------------------------------ split phase 1
@pytest.mark.parametrize(
    "variant,dtype,chunk",
    [("paper", torch.float32, 13), ("paper", torch.bfloat16, 5), ("reference", torch.float32, 13),
     ("reference", torch.float16, 32)],
)
def test_split_cluster_filter_weights_match_reference_and_float64(variant, dtype, chunk, monkeypatch):
    """Phase 1 cut into channel slices (37 = 13 + 13 + 11, 8 x 5 - 3, 32 + 5: ragged last slices), a NaN
    output row: the scores launch writes every channel once and the finishing launch (clusters, softmax)
    agrees with the reference and the float64 oracle."""
    chosen = force_split(monkeypatch, chunk)
    grad, labels = _cfcam_inputs(dtype, seed=31)
    got = cluster_filter_weights(grad, labels, variant=variant, out=poisoned(B, C))
    assert chosen == [(-(-C // chunk), chunk)]
    assert_close(got, cluster_filter_weights_reference(grad, labels, variant=variant))
    sigma = 1.0 if variant == "paper" else 5.0
    assert_close(got, cfcam_weights_float64(grad, labels, variant, sigma).float())
    assert (got[labels == NOISE] == 0).all() and (got[2] == 0).all()
    again = cluster_filter_weights(grad, labels, variant=variant)
    assert torch.equal(got, again)  # deterministic: no atomics


def test_split_and_fused_paths_agree_with_small_blocks(monkeypatch):
    """Split phase 1 with tiny blocks (every loop iterates, ragged chunks) against the fused one-launch
    path: the same per-channel maths, so equal to rounding."""
    monkeypatch.setattr(cfcam_filter, "_blocks", lambda c, hh, ww, on_gpu: (4, 16, triton_pow2(hh), triton_pow2(ww), 4))
    grad, labels = _cfcam_inputs(torch.float32, seed=32)
    force_split(monkeypatch, None)
    fused = {v: cluster_filter_weights(grad, labels, variant=v, out=poisoned(B, C)) for v in ("paper", "reference")}
    force_split(monkeypatch, 9)
    for variant, expected in fused.items():
        got = cluster_filter_weights(grad, labels, variant=variant, out=poisoned(B, C))
        assert_close(got, expected)
        assert_close(got, cluster_filter_weights_reference(grad, labels, variant=variant))


def test_cfcam_plan_fills_the_gpu():
    """ResNet-50 / ResNet-18 layer4 at B = 1, 8, 64: phase 1 split to >= 2x 132 programs where the channels
    allow; B >= 264: one fused launch."""
    grids = {(c, n): cfcam_filter.plan(torch.empty(n, c, 7, 7)).grid for c in (2048, 512) for n in (1, 8, 64, 264)}
    assert grids == {(2048, 1): (1, 64), (2048, 8): (8, 32), (2048, 64): (64, 5), (2048, 264): (264,),
                     (512, 1): (1, 16), (512, 8): (8, 16), (512, 64): (64, 4), (512, 264): (264,)}


# ------------------------------------------------------------------------------------ multi-step loops
def test_small_blocks_exercise_every_loop(monkeypatch):
    """The interpreter's default blocks cover a CI-sized problem in one program step, so the kernels'
    loops (channel chunks, spatial tiles, output tiles, label scans, member gathers) would run once;
    on a GPU they run many times. Tiny blocks make every loop iterate, with ragged last chunks."""
    from fastcam.kernels import upsample_normalize as upsample_module

    monkeypatch.setattr(cam_combine, "_reduction_blocks", lambda c, p, on_gpu: (8, 16, 4))
    monkeypatch.setattr(upsample_module, "_tile_shape", lambda hh, ww, on_gpu: (16, 16, 4))
    monkeypatch.setattr(cfcam_filter, "_blocks", lambda c, hh, ww, on_gpu: (8, 16, triton_pow2(hh), triton_pow2(ww), 4))
    activations, weights = combine_inputs(torch.float32, seed=14)
    lowres, maps = combine(activations.to(memory_format=torch.channels_last), weights, (H, W),
                           lowres_out=poisoned(B, h, w), maps_out=poisoned(B, H, W))
    ref_lowres, ref_maps = combine_reference(activations, weights, (H, W))
    assert_close(lowres, ref_lowres)
    assert_close(maps, ref_maps)
    grad, labels = _cfcam_inputs(torch.float32, seed=15)
    grad, labels = grad[:2], labels[:2]  # the all-noise image adds no loop
    for variant in ("paper", "reference"):
        got = cluster_filter_weights(grad, labels, variant=variant, out=poisoned(2, C))
        assert_close(got, cluster_filter_weights_reference(grad, labels, variant=variant))


def triton_pow2(n: int) -> int:
    import triton

    return triton.next_power_of_2(n)

"""The post-hoc combine kernels (upsample-normalise, weighted sum + ReLU, CF-CAM cluster filter) against
their torch references and float64 hand computations, under Triton's interpreter on CPU (conftest sets
TRITON_INTERPRET=1 without CUDA), and the public methods with backend="triton" against backend="torch".

Tolerances: float32 results must agree to 1e-5 relative, with an absolute floor of 1e-5 times the output's
largest magnitude (a channel sum with cancellation can end near zero, where a purely relative test is
meaningless). Half-precision inputs are cast to float32 after loading by both paths, so they are held to
the same bound against the reference, and to 1e-4 against float64 maths on the same half values.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

import fastcam  # noqa: E402
from fastcam.kernels import cam_combine  # noqa: E402
from fastcam.kernels.cam_combine import combine, combine_reference, weighted_sum_relu, weighted_sum_relu_reference  # noqa: E402
from fastcam.kernels.upsample_normalize import upsample_normalize, upsample_normalize_reference  # noqa: E402

# Triton 3.6's interpreter converts runtime loop bounds with a numpy call that numpy 2.3 deprecates (2.4
# removes it: hence numpy<2.4 in constraints.txt); the warning is the interpreter's, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")

HALF = (torch.float16, torch.bfloat16)
DTYPES = (torch.float32, *HALF)
B, C, h, w, H, W = 3, 37, 5, 7, 33, 29  # odd, non-power-of-two sizes everywhere


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert torch.isfinite(actual).all(), "non-finite values (an element left unwritten?)"
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-30))


def poisoned(*shape: int) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=torch.float32)


def bilinear_float64(lowres: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Independent oracle: align_corners=False bilinear upsampling + max-normalise, in float64 by hand."""
    x = lowres.double()
    in_h, in_w = x.shape[-2:]

    def axis(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp_min(0)
        i0 = src.floor().long().clamp_max(n_in - 1)
        i1 = (i0 + 1).clamp_max(n_in - 1)
        return i0, i1, (src - i0).clamp(0, 1)

    y0, y1, ly = axis(in_h, size[0])
    x0, x1, lx = axis(in_w, size[1])
    top = x[:, y0][:, :, x0] * (1 - lx) + x[:, y0][:, :, x1] * lx
    bottom = x[:, y1][:, :, x0] * (1 - lx) + x[:, y1][:, :, x1] * lx
    up = top * (1 - ly)[:, None] + bottom * ly[:, None]
    peak = up.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, up / torch.where(peak > 0, peak, 1), 0)


# ------------------------------------------------------------------------------------ upsample-normalise
@pytest.mark.parametrize("dtype", (*DTYPES, torch.float64))
def test_upsample_normalize_matches_reference_and_float64(dtype):
    lowres = torch.rand(B, h, w, generator=_gen(1)).to(dtype)
    lowres[1] = 0  # an all-zero map stays zero
    out = poisoned(B, H, W)
    got = upsample_normalize(lowres, (H, W), out=out)
    assert got.data_ptr() == out.data_ptr()
    assert_close(got, upsample_normalize_reference(lowres, (H, W)))
    assert_close(got, bilinear_float64(lowres, (H, W)).float(), rtol=1e-5 if dtype == torch.float32 else 1e-4)
    assert (got[1] == 0).all()
    assert torch.equal(got.amax(dim=(1, 2)), torch.tensor([1.0, 0.0, 1.0]))  # the peak is exactly 1


@pytest.mark.parametrize(
    "low_size,size", [((5, 7), (5, 7)), ((16, 9), (7, 5)), ((1, 1), (3, 4)), ((3, 1), (70, 9)), ((2, 3), (1, 1))]
)
def test_upsample_normalize_same_down_and_degenerate_sizes(low_size, size):
    lowres = torch.rand(2, *low_size, generator=_gen(2))
    got = upsample_normalize(lowres, size, out=poisoned(2, *size))
    assert_close(got, upsample_normalize_reference(lowres, size))
    assert_close(got, bilinear_float64(lowres, size).float())


def test_upsample_normalize_strided_input_and_output():
    base = torch.rand(B, w + 2, h + 3, generator=_gen(3))
    lowres = base[:, 1 : w + 1, 2 : h + 2].transpose(1, 2)  # (B, h, w), neither dim contiguous
    assert not lowres.is_contiguous()
    buffer = poisoned(B, H + 2, W + 3)
    out = buffer[:, 1 : H + 1, 2 : W + 2]
    upsample_normalize(lowres, (H, W), out=out)
    assert_close(out, upsample_normalize_reference(lowres.contiguous(), (H, W)))
    inner = torch.zeros_like(buffer, dtype=torch.bool)
    inner[:, 1 : H + 1, 2 : W + 2] = True
    assert buffer[~inner].isnan().all(), "the kernel wrote outside the output view"


def test_upsample_normalize_bad_input():
    lowres = torch.rand(2, 3, 4)
    with pytest.raises(ValueError, match="lowres"):
        upsample_normalize(lowres[0], (5, 5))
    with pytest.raises(TypeError, match="lowres"):
        upsample_normalize(lowres.long(), (5, 5))
    with pytest.raises(TypeError, match="size"):
        upsample_normalize(lowres, (5.0, 5))
    with pytest.raises(ValueError, match="size"):
        upsample_normalize(lowres, (0, 5))
    with pytest.raises(ValueError, match="out"):
        upsample_normalize(lowres, (5, 5), out=torch.empty(2, 5, 4))
    with pytest.raises(ValueError, match="out"):
        upsample_normalize(lowres, (5, 5), out=torch.empty(2, 5, 5, dtype=torch.float16))


# ------------------------------------------------------------------------------------ weighted sum + combine
def _inputs(dtype: torch.dtype, seed: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    activations = torch.randn(B, C, h, w, generator=g).relu_().to(dtype)
    weights = torch.randn(B, C, generator=g) * 0.1
    return activations, weights


@pytest.mark.parametrize("dtype", DTYPES)
def test_combine_matches_reference_and_float64(dtype):
    activations, weights = _inputs(dtype)
    weights[2] = -weights[2].abs()  # image 2: every channel weight negative -> ReLU -> all-zero map
    lowres_out, maps_out = poisoned(B, h, w), poisoned(B, H, W)
    lowres, maps = combine(activations, weights, (H, W), lowres_out=lowres_out, maps_out=maps_out)
    assert lowres.data_ptr() == lowres_out.data_ptr() and maps.data_ptr() == maps_out.data_ptr()
    ref_lowres, ref_maps = combine_reference(activations, weights, (H, W))
    assert_close(lowres, ref_lowres)
    assert_close(maps, ref_maps)
    exact = torch.einsum("bc,bchw->bhw", weights.double(), activations.double()).relu()
    assert_close(lowres, exact.float(), rtol=1e-5 if dtype == torch.float32 else 1e-4)
    assert (lowres[2] == 0).all() and (maps[2] == 0).all() and (lowres[:2] > 0).any()


@pytest.mark.parametrize("layout", ["channels_last", "sliced", "permuted"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_combine_layouts_read_in_place(layout, dtype):
    activations, weights = _inputs(dtype, seed=5)
    if layout == "channels_last":
        activations = activations.to(memory_format=torch.channels_last)
    elif layout == "sliced":
        big = torch.randn(B, 2 * C, h + 1, w + 3, generator=_gen(6)).to(dtype)
        activations = big[:, 1::2, 1:, 2:-1]
        weights = torch.randn(C, B, generator=_gen(7)).t()  # non-contiguous weights too
    else:  # (B, h, w, C) storage seen as (B, C, h, w), then a batch-reversed view (negative-free, odd strides)
        activations = activations.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)[[2, 0, 1]]
    assert not activations.is_contiguous()
    lowres, maps = combine(activations, weights, (H, W), lowres_out=poisoned(B, h, w), maps_out=poisoned(B, H, W))
    ref_lowres, ref_maps = combine_reference(activations.contiguous(), weights.contiguous(), (H, W))
    assert_close(lowres, ref_lowres)
    assert_close(maps, ref_maps)


def test_weighted_sum_float64_and_single_channel_1x1():
    activations, weights = _inputs(torch.float64)
    assert_close(weighted_sum_relu(activations, weights.double()), weighted_sum_relu_reference(activations, weights.double()))
    one = torch.rand(2, 1, 1, 1, generator=_gen(8))
    lowres, maps = combine(one, torch.tensor([[1.0], [-1.0]]), (3, 5))
    assert_close(lowres, one[:, 0] * torch.tensor([1.0, 0.0])[:, None, None])
    assert torch.equal(maps, torch.stack([torch.ones(3, 5), torch.zeros(3, 5)]))


def test_combine_bad_input():
    activations, weights = _inputs(torch.float32)
    with pytest.raises(ValueError, match="weights"):
        combine(activations, weights[:, :-1], (H, W))
    with pytest.raises(ValueError, match="activations"):
        combine(activations[0], weights, (H, W))
    with pytest.raises(TypeError, match="activations"):
        combine(activations.long(), weights, (H, W))
    with pytest.raises(ValueError, match="lowres_out|out"):
        combine(activations, weights, (H, W), lowres_out=torch.empty(B, h, w + 1))
    lowres, maps = combine(activations[:0], weights[:0], (H, W))  # an empty batch launches nothing
    assert lowres.shape == (0, h, w) and maps.shape == (0, H, W)


# ------------------------------------------------------------------------------------ through the methods
def _spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count calls of the Triton combine, so a silent fall-back to torch would fail the test."""
    calls: list[int] = []
    original = cam_combine.combine

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(cam_combine, "combine", counted)
    return calls


@pytest.mark.parametrize("method", ["GradCAM", "GradCAMPlusPlus", "ScoreCAM"])
def test_methods_triton_equals_torch(method, resnet, images, monkeypatch):
    kwargs = {"batch_size": 64} if method == "ScoreCAM" else {}
    targets = [0, 1, 2, 3]
    if method == "ScoreCAM":  # its masked forwards dominate the time: two images are enough here
        images, targets = images[:2], [0, 3]
    with getattr(fastcam, method)(resnet, "layer4", backend="torch", **kwargs) as cam:
        expected = cam.explain(images, targets)
    calls = _spy(monkeypatch)
    with getattr(fastcam, method)(resnet, "layer4", backend="triton", **kwargs) as cam:
        got = cam.explain(images, targets)
    assert calls == [1]
    assert_close(got.lowres, expected.lowres)
    assert_close(got.maps, expected.maps)
    assert got.maps.shape == images.shape[:1] + images.shape[2:] and float(got.maps.max()) == 1.0


# ------------------------------------------------------------------------------------ CF-CAM cluster filter
from fastcam.kernels import cfcam_filter  # noqa: E402
from fastcam.kernels.cfcam_filter import cfcam_combine, cluster_filter_weights, cluster_filter_weights_reference  # noqa: E402
from fastcam.methods.cfcam import IMPORTANT, NOISE  # noqa: E402


def _cfcam_inputs(dtype: torch.dtype = torch.float32, seed: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients with an O(1) per-channel offset (scores spread enough for the softmax to see every
    error) plus small spatial detail (so the reference filter's range term matters), and labels with
    important channels, noise, clusters of one and of many members, unused cluster ids, and an image
    whose channels are all noise (nothing kept: zero weights)."""
    g = _gen(seed)
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
    grad = torch.randn(2, 3, 4, 4, generator=_gen(11))
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
    activations = torch.randn(B, C, h, w, generator=_gen(13)).relu_().to(memory_format=torch.channels_last)
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
    combine_calls = _spy(monkeypatch)
    filter_calls: list[int] = []
    original = cfcam_filter.cluster_filter_weights

    def counted(*args, **kwargs):
        filter_calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(cfcam_filter, "cluster_filter_weights", counted)
    with fastcam.CFCAM(resnet, "layer4", variant=variant, backend="triton") as cam:
        got = cam.explain(images, targets)
    assert combine_calls == [1] and filter_calls == [1]
    assert_close(got.lowres, expected.lowres)
    assert_close(got.maps, expected.maps)


# ------------------------------------------------------------------------------------ multi-step loops
def test_small_blocks_exercise_every_loop(monkeypatch):
    """The interpreter's default blocks cover a CI-sized problem in one program step, so the kernels'
    loops (channel chunks, spatial tiles, output tiles, label scans, member gathers) would run once;
    on a GPU they run many times. Tiny blocks make every loop iterate, with ragged last chunks."""
    from fastcam.kernels import upsample_normalize as upsample_module

    monkeypatch.setattr(cam_combine, "_reduction_blocks", lambda c, p, on_gpu: (8, 16, 4))
    monkeypatch.setattr(upsample_module, "_tile_shape", lambda hh, ww, on_gpu: (16, 16, 4))
    monkeypatch.setattr(cfcam_filter, "_blocks", lambda c, hh, ww, on_gpu: (8, 16, triton_pow2(hh), triton_pow2(ww), 4))
    activations, weights = _inputs(torch.float32, seed=14)
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

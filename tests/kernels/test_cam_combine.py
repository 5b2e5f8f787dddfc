"""`fastcam.kernels.cam_combine` (weighted sum + ReLU, then upsample-normalise) against its torch reference
(`fastcam.ops.combine`) and float64, and every method with backend="triton" against backend="torch"."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from fastcam.kernels import cam_combine  # noqa: E402
from fastcam.kernels.cam_combine import (  # noqa: E402
    combine,
    weighted_sum_relu,
)
from fastcam_testkit.kernels import (  # noqa: E402
    DTYPES,
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
from fastcam.ops import combine as combine_reference  # noqa: E402
from fastcam.ops import weighted_sum_relu as weighted_sum_relu_reference  # noqa: E402

pytestmark = INTERPRETER_TESTS


@pytest.mark.parametrize("dtype", DTYPES)
def test_combine_matches_reference_and_float64(dtype):
    activations, weights = combine_inputs(dtype)
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
    activations, weights = combine_inputs(dtype, seed=5)
    if layout == "channels_last":
        activations = activations.to(memory_format=torch.channels_last)
    elif layout == "sliced":
        big = torch.randn(B, 2 * C, h + 1, w + 3, generator=gen(6)).to(dtype)
        activations = big[:, 1::2, 1:, 2:-1]
        weights = torch.randn(C, B, generator=gen(7)).t()  # non-contiguous weights too
    else:  # (B, h, w, C) storage seen as (B, C, h, w), then a batch-reversed view (negative-free, odd strides)
        activations = activations.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)[[2, 0, 1]]
    assert not activations.is_contiguous()
    lowres, maps = combine(activations, weights, (H, W), lowres_out=poisoned(B, h, w), maps_out=poisoned(B, H, W))
    ref_lowres, ref_maps = combine_reference(activations.contiguous(), weights.contiguous(), (H, W))
    assert_close(lowres, ref_lowres)
    assert_close(maps, ref_maps)


def test_weighted_sum_float64_and_single_channel_1x1():
    activations, weights = combine_inputs(torch.float64)
    assert_close(weighted_sum_relu(activations, weights.double()), weighted_sum_relu_reference(activations, weights.double()))
    one = torch.rand(2, 1, 1, 1, generator=gen(8))
    lowres, maps = combine(one, torch.tensor([[1.0], [-1.0]]), (3, 5))
    assert_close(lowres, one[:, 0] * torch.tensor([1.0, 0.0])[:, None, None])
    assert torch.equal(maps, torch.stack([torch.ones(3, 5), torch.zeros(3, 5)]))


def test_combine_bad_input():
    activations, weights = combine_inputs(torch.float32)
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
@pytest.mark.parametrize("method", ["GradCAM", "GradCAMPlusPlus", "ScoreCAM"])
def test_methods_triton_equals_torch(method, resnet, images, monkeypatch):
    kwargs = {"batch_size": 64} if method == "ScoreCAM" else {}
    targets = [0, 1, 2, 3]
    if method == "ScoreCAM":  # its masked forwards dominate the time: two images are enough here
        images, targets = images[:2], [0, 3]
    with getattr(fastcam, method)(resnet, "layer4", backend="torch", **kwargs) as cam:
        expected = cam.explain(images, targets)
    calls = spy(monkeypatch, cam_combine, "combine")
    with getattr(fastcam, method)(resnet, "layer4", backend="triton", **kwargs) as cam:
        got = cam.explain(images, targets)
    assert calls == [1]
    assert_close(got.lowres, expected.lowres)
    assert_close(got.maps, expected.maps)
    assert got.maps.shape == images.shape[:1] + images.shape[2:] and float(got.maps.max()) == 1.0


# ------------------------------------------------------------------------------------ split channel sum
@pytest.mark.parametrize("dtype,layout", [(torch.float32, "nchw"), (torch.bfloat16, "channels_last"), (torch.float64, "nchw")])
def test_split_combine_matches_reference(dtype, layout, monkeypatch):
    """The channel sum cut into slices of 13 channels (37 = 13 + 13 + 11: a ragged last slice), NaN
    workspace and outputs: every slice is written once, folded once, and agrees with the reference."""
    chosen = force_split(monkeypatch, 13)
    activations, weights = combine_inputs(dtype, seed=21)
    weights[1] = -weights[1].abs()  # all-zero map through the fold
    if layout == "channels_last":
        activations = activations.to(memory_format=torch.channels_last)
    if dtype == torch.float64:
        weights = weights.double()
    lowres, maps = combine(activations, weights, (H, W), lowres_out=poisoned(B, h, w), maps_out=poisoned(B, H, W))
    assert chosen == [(3, 13)]
    ref_lowres, ref_maps = combine_reference(activations, weights, (H, W))
    assert_close(lowres, ref_lowres)
    assert_close(maps, ref_maps)
    exact = torch.einsum("bc,bchw->bhw", weights.double(), activations.double()).relu()
    assert_close(lowres, exact.float(), rtol=1e-5 if dtype == torch.float32 else 1e-4)
    assert (maps[1] == 0).all() and torch.equal(maps.amax(dim=(1, 2)), torch.tensor([1.0, 0.0, 1.0]))


def test_split_is_bit_stable_and_both_folds_agree(monkeypatch):
    """Deterministic: the same call twice gives identical bits, and `weighted_sum_relu` (fold kernel)
    and `combine` (fold inside the upsample launch) add the slices in the same order."""
    force_split(monkeypatch, 13)
    activations, weights = combine_inputs(torch.float32, seed=22)
    first = combine(activations, weights, (H, W))
    second = combine(activations, weights, (H, W))
    alone = weighted_sum_relu(activations, weights, out=poisoned(B, h, w))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert torch.equal(alone, first[0])
    assert_close(alone, weighted_sum_relu_reference(activations, weights))


def test_split_choice_fills_the_gpu():
    """`channel_split` at ResNet layer4 shapes on 132 SMs, and its invariants on a sweep of shapes."""
    from fastcam.kernels._launch import (
        INTERPRETER_SMS,
        ChannelSplit,
        channel_split,
        sm_count,
        unsplit,
    )

    assert sm_count(torch.device("cpu")) == INTERPRETER_SMS == 132
    plans = {n: cam_combine.plan(torch.empty(n, 2048, 7, 7)) for n in (1, 8, 64, 264)}
    assert {n: (p.grid, p.split.chunk) for n, p in plans.items()} == {
        1: ((1, 1, 64), 32), 8: ((8, 1, 32), 64), 64: ((64, 1, 5), 416), 264: ((264, 1, 1), 2048)}
    assert [cam_combine.plan(torch.empty(n, 512, 7, 7)).grid for n in (1, 8, 64)] == [(1, 1, 16), (8, 1, 16), (64, 1, 4)]
    with unsplit():  # the benchmarks' plain-grid baseline
        assert cam_combine.plan(torch.empty(1, 2048, 7, 7)).grid == (1, 1, 1)
    assert cam_combine.plan(torch.empty(1, 2048, 7, 7)).grid == (1, 1, 64)
    for programs in (1, 3, 50, 263, 264, 1000):
        for channels in (1, 31, 37, 64, 100, 2048, 4099):
            s = channel_split(programs, channels, 132, min_chunk=32, align=32)
            if s.parts == 1:
                assert s == ChannelSplit(1, channels)
                continue
            assert programs < 264 and s.chunk % 32 == 0 and s.chunk >= 32 and 2 <= s.parts <= 64
            assert (s.parts - 1) * s.chunk < channels <= s.parts * s.chunk  # no empty slice, all covered

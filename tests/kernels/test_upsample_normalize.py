"""`fastcam.kernels.upsample_normalize` against its torch reference (`fastcam.ops.upsample_normalize`) and a
float64 hand computation, in Triton's interpreter on CPU (conftest sets TRITON_INTERPRET=1 without CUDA)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from fastcam.kernels.upsample_normalize import (  # noqa: E402
    upsample_normalize,
)
from fastcam_testkit.kernels import (  # noqa: E402
    DTYPES,
    INTERPRETER_TESTS,
    B,
    H,
    W,
    assert_close,
    bilinear_float64,
    gen,
    h,
    poisoned,
    w,
)
from fastcam.ops import upsample_normalize as upsample_normalize_reference  # noqa: E402

pytestmark = INTERPRETER_TESTS


# ------------------------------------------------------------------------------------ upsample-normalise
@pytest.mark.parametrize("dtype", (*DTYPES, torch.float64))
def test_upsample_normalize_matches_reference_and_float64(dtype):
    lowres = torch.rand(B, h, w, generator=gen(1)).to(dtype)
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
    lowres = torch.rand(2, *low_size, generator=gen(2))
    got = upsample_normalize(lowres, size, out=poisoned(2, *size))
    assert_close(got, upsample_normalize_reference(lowres, size))
    assert_close(got, bilinear_float64(lowres, size).float())


def test_upsample_normalize_strided_input_and_output():
    base = torch.rand(B, w + 2, h + 3, generator=gen(3))
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


# ------------------------------------------------------------------------------------ through the methods
@pytest.mark.parametrize("method,kwargs", [("LayerCAM", {}), ("EigenCAM", {}), ("GradCAM", {"eigen_smooth": True})])
def test_lowres_methods_take_the_triton_upsample_normalize(method, kwargs, resnet, images, monkeypatch):
    """Methods with their own `_get_lowres` (and eigen_smooth) reach the maps through this kernel."""
    from fastcam.kernels import upsample_normalize as module
    from fastcam_testkit.kernels import spy

    import fastcam

    with getattr(fastcam, method)(resnet, "layer3", backend="torch", **kwargs) as cam:
        expected = cam.explain(images, [0, 1, 2, 3])
    calls = spy(monkeypatch, module, "upsample_normalize")
    with getattr(fastcam, method)(resnet, "layer3", backend="triton", **kwargs) as cam:
        got = cam.explain(images, [0, 1, 2, 3])
    assert calls == [1]
    assert_close(got.lowres, expected.lowres)
    assert_close(got.maps, expected.maps)

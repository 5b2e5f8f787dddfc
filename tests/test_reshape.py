"""fastcam.reshape: the layout helpers, element by element against index arithmetic written out."""
from __future__ import annotations

import pytest
import torch

import fastcam.reshape as R
from fastcam_testkit.common import gen


def test_vit_drops_prefix_tokens_and_lays_patches_out_row_major() -> None:
    tokens = torch.randn(2, 3 + 4 * 6, 5, generator=gen(0))  # 3 prefix tokens (CLS, distillation, a register)
    maps = R.vit(prefix_tokens=3, grid=(4, 6))(tokens)
    assert maps.shape == (2, 5, 4, 6)
    for i in range(4):
        for j in range(6):
            torch.testing.assert_close(maps[:, :, i, j], tokens[:, 3 + i * 6 + j, :], rtol=0, atol=0)


def test_vit_infers_a_square_grid_and_refuses_to_guess_another() -> None:
    assert R.vit()(torch.randn(1, 1 + 49, 8)).shape == (1, 8, 7, 7)
    assert R.vit(0)(torch.randn(1, 16, 8)).shape == (1, 8, 4, 4)  # no CLS token
    with pytest.raises(ValueError, match=r"square grid: pass grid=\(h, w\)"):
        R.vit(1)(torch.randn(1, 1 + 24, 8))
    with pytest.raises(ValueError, match="does not hold the 24 patch tokens"):
        R.vit(1, grid=(5, 5))(torch.randn(1, 1 + 24, 8))
    with pytest.raises(ValueError, match="cannot hold 4 prefix tokens"):
        R.vit(4)(torch.randn(1, 4, 8))
    with pytest.raises(ValueError, match="expects \\(B, N, C\\) tokens"):
        R.vit()(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="prefix_tokens must be an int"):
        R.vit(-1)


def test_vit_takes_the_first_element_of_a_block_tuple_and_3d_grids() -> None:
    tokens = torch.randn(2, 1 + 2 * 3 * 4, 5, generator=gen(1))
    volume = R.vit(1, grid=(2, 3, 4))((tokens, None))  # (hidden_states, attentions)
    assert volume.shape == (2, 5, 2, 3, 4)
    torch.testing.assert_close(volume[:, :, 1, 2, 3], tokens[:, 1 + 1 * 12 + 2 * 4 + 3])


def test_swin_takes_token_sequences_and_channels_last_maps() -> None:
    tokens = torch.randn(2, 12, 5, generator=gen(2))
    maps = R.swin(grid=(3, 4))(tokens)
    torch.testing.assert_close(maps[:, :, 2, 1], tokens[:, 2 * 4 + 1])
    nhwc = torch.randn(2, 3, 4, 5, generator=gen(3))
    torch.testing.assert_close(R.swin()(nhwc), nhwc.permute(0, 3, 1, 2))
    torch.testing.assert_close(R.swin()((tokens[:, :9], "extra")), tokens[:, :9].reshape(2, 3, 3, 5).permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="square grid"):
        R.swin()(tokens)


def test_nhwc_maps_and_volumes() -> None:
    x = torch.randn(2, 3, 4, 5, generator=gen(4))
    torch.testing.assert_close(R.nhwc(x), x.permute(0, 3, 1, 2))
    v = torch.randn(2, 3, 4, 5, 6, generator=gen(5))
    torch.testing.assert_close(R.nhwc(v), v.permute(0, 4, 1, 2, 3))
    with pytest.raises(ValueError, match="nhwc expects"):
        R.nhwc(torch.randn(2, 3, 4))

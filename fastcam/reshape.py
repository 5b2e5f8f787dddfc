r"""Layer outputs of other layouts, turned into the (B, C, h, w) maps every method explains.

pytorch-grad-cam's convention: `reshape_transform=` is a callable from the target layer's output to
(B, C, h, w). The same transform is applied to the activations and to their gradients (a permutation,
reshape or token selection commutes with differentiation).

- `vit(prefix_tokens=1, grid=None)`: token sequences (B, N, C) of ViT/DeiT/BEiT-style encoders: drop
  the CLS (and distillation / register) tokens, lay the rest out on the patch grid.
- `swin(grid=None)`: Swin stages: (B, L, C) token sequences (Hugging Face) or channels-last (B, h, w, C)
  maps (timm).
- `nhwc`: channels-last 4-D maps (B, h, w, C) (ConvNeXt blocks in timm's NHWC mode, Swin stages).

Never guessed: fastcam refuses a 3-D layer output without a transform, and a 4-D one that looks
channels-last, naming the helper to use.
"""
from __future__ import annotations

import math
from typing import Callable

from torch import Tensor

__all__ = ["nhwc", "swin", "vit"]


def _grid(length: int, grid: tuple[int, int] | None, what: str) -> tuple[int, int]:
    if grid is not None:
        if len(grid) != 2 or grid[0] * grid[1] != length:
            raise ValueError(f"grid {tuple(grid)} does not hold the {length} {what}")
        return int(grid[0]), int(grid[1])
    side = math.isqrt(length)
    if side * side != length:
        raise ValueError(f"{length} {what} do not form a square grid: pass grid=(h, w)")
    return side, side


def _tokens_to_maps(tokens: Tensor, grid: tuple[int, int] | None, what: str) -> Tensor:
    batch, length, channels = tokens.shape
    height, width = _grid(length, grid, what)
    return tokens.reshape(batch, height, width, channels).permute(0, 3, 1, 2)


def nhwc(output: Tensor) -> Tensor:
    """(B, h, w, C) channels-last maps -> (B, C, h, w)."""
    if not isinstance(output, Tensor) or output.dim() != 4:
        raise ValueError(f"nhwc expects a (B, h, w, C) tensor, got {getattr(output, 'shape', type(output).__name__)}")
    return output.permute(0, 3, 1, 2)


def vit(prefix_tokens: int = 1, grid: tuple[int, int] | None = None) -> Callable[[Tensor], Tensor]:
    """A transform for (B, N, C) token sequences: the first `prefix_tokens` tokens (CLS, distillation,
    registers) are dropped, the remaining N - prefix_tokens patch tokens laid out on `grid` (inferred when
    square)."""
    if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) or prefix_tokens < 0:
        raise ValueError(f"prefix_tokens must be an int >= 0, got {prefix_tokens!r}")

    def transform(output: Tensor) -> Tensor:
        if isinstance(output, (tuple, list)):  # some blocks return (hidden_states, attentions)
            output = output[0]
        if not isinstance(output, Tensor) or output.dim() != 3:
            raise ValueError(f"vit() expects (B, N, C) tokens, got {getattr(output, 'shape', type(output).__name__)}")
        if output.shape[1] <= prefix_tokens:
            raise ValueError(f"{output.shape[1]} tokens cannot hold {prefix_tokens} prefix tokens and a patch grid")
        return _tokens_to_maps(output[:, prefix_tokens:], grid, "patch tokens")

    transform.__qualname__ = f"vit(prefix_tokens={prefix_tokens}, grid={grid})"
    return transform


def swin(grid: tuple[int, int] | None = None) -> Callable[[Tensor], Tensor]:
    """A transform for Swin stages: (B, L, C) token sequences (no prefix tokens) on `grid` (inferred when
    square), or channels-last (B, h, w, C) maps."""

    def transform(output: Tensor) -> Tensor:
        if isinstance(output, (tuple, list)):
            output = output[0]
        if isinstance(output, Tensor) and output.dim() == 4:
            return nhwc(output)
        if not isinstance(output, Tensor) or output.dim() != 3:
            raise ValueError(f"swin() expects (B, L, C) or (B, h, w, C), got {getattr(output, 'shape', type(output).__name__)}")
        return _tokens_to_maps(output, grid, "tokens")

    transform.__qualname__ = f"swin(grid={grid})"
    return transform

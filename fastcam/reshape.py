r"""Layer outputs of other layouts, turned into the (B, C, h, w) maps every method explains.

pytorch-grad-cam's convention: `reshape_transform=` is a callable from the target layer's output to
(B, C, h, w). The same transform is applied to the activations and to their gradients (a permutation,
reshape or token selection commutes with differentiation).

- `vit(prefix_tokens=1, grid=None)`: token sequences (B, N, C) of ViT/DeiT/BEiT-style encoders: drop
  the CLS (and distillation / register) tokens, lay the rest out on the patch grid.
- `swin(grid=None)`: Swin stages: (B, L, C) token sequences (Hugging Face) or channels-last (B, h, w, C)
  maps (timm).
- `nhwc`: channels-last maps (B, h, w, C) (ConvNeXt blocks in timm's NHWC mode, Swin stages), and
  channels-last volumes (B, d, h, w, C).

Never guessed: fastcam refuses a 3-D layer output without a transform, and a 4-D one that looks
channels-last, naming the helper to use.
"""
from __future__ import annotations

import math
from typing import Callable

from torch import Tensor

__all__ = ["Layout", "channels_first", "from_spec", "nhwc", "swin", "vit"]


def _grid(length: int, grid: tuple[int, ...] | None, what: str) -> tuple[int, ...]:
    if grid is not None:
        if len(grid) not in (2, 3) or math.prod(grid) != length:
            raise ValueError(f"grid {tuple(grid)} does not hold the {length} {what}: give (h, w) or (d, h, w) "
                             "whose product is the token count")
        return tuple(int(g) for g in grid)
    side = math.isqrt(length)
    if side * side != length:
        raise ValueError(f"{length} {what} do not form a square grid: pass grid=(h, w) (or (d, h, w) for volumes)")
    return side, side


def _tokens_to_maps(tokens: Tensor, grid: tuple[int, ...] | None, what: str) -> Tensor:
    batch, length, channels = tokens.shape
    sizes = _grid(length, grid, what)
    return channels_first(tokens.reshape(batch, *sizes, channels))


def channels_first(output: Tensor) -> Tensor:
    """(B, *spatial, C) -> (B, C, *spatial), for any number of spatial dims."""
    return output.movedim(-1, 1)


def nhwc(output: Tensor) -> Tensor:
    """(B, h, w, C) channels-last maps -> (B, C, h, w); (B, d, h, w, C) volumes -> (B, C, d, h, w)."""
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        output = output[0]
    if not isinstance(output, Tensor) or output.dim() not in (4, 5):
        raise ValueError(f"nhwc expects a (B, h, w, C) or (B, d, h, w, C) tensor, got "
                         f"{tuple(getattr(output, 'shape', ())) or type(output).__name__}")
    return channels_first(output)


class Layout:
    """A reshape transform with a stable, readable repr (run settings record it): `vit(...)`, `swin(...)`."""

    def __init__(self, name: str, fn: Callable[[Tensor], Tensor], **params: object) -> None:
        self.name, self.fn, self.params = name, fn, params

    def __call__(self, output: Tensor) -> Tensor:
        return self.fn(output)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"fastcam.reshape.{self.name}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and (self.name, self.params) == (other.name, other.params)

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.params.items())))


def vit(prefix_tokens: int = 1, grid: tuple[int, ...] | None = None) -> Layout:
    """A transform for (B, N, C) token sequences: the first `prefix_tokens` tokens (CLS, distillation,
    registers) are dropped, the remaining N - prefix_tokens patch tokens laid out on `grid` (inferred when
    square; (h, w) for other images, (d, h, w) for volumes).

    Typical prefixes: ViT 1 (CLS), DeiT-distilled 2 (CLS + distillation), ViT with registers 1 + registers
    (timm: `model.num_prefix_tokens`), no CLS token (global-pool ViTs without one) 0."""
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

    return Layout("vit", transform, prefix_tokens=prefix_tokens, grid=tuple(grid) if grid is not None else None)


def swin(grid: tuple[int, ...] | None = None) -> Layout:
    """A transform for Swin stages: (B, L, C) token sequences (no prefix tokens) on `grid` (inferred when
    square), or channels-last (B, h, w, C) maps (timm)."""

    def transform(output: Tensor) -> Tensor:
        if isinstance(output, (tuple, list)):
            output = output[0]
        if isinstance(output, Tensor) and output.dim() in (4, 5):
            return nhwc(output)
        if not isinstance(output, Tensor) or output.dim() != 3:
            raise ValueError(f"swin() expects (B, L, C) or channels-last (B, h, w, C), got "
                             f"{getattr(output, 'shape', type(output).__name__)}")
        return _tokens_to_maps(output, grid, "tokens")

    return Layout("swin", transform, grid=tuple(grid) if grid is not None else None)


def from_spec(spec: str, *, prefix_tokens: int | None = None) -> Callable[[Tensor], Tensor]:
    """A transform from a short text (the CLI's `--reshape`): "nhwc"; "swin" or "swin:HxW"; "vit",
    "vit:N" (N prefix tokens) or "vit:N:HxW". A bare "vit" drops `prefix_tokens` tokens when the model
    says how many (timm's `num_prefix_tokens`), else 1 (the CLS token)."""
    parts = spec.strip().lower().split(":")

    def grid_of(text: str) -> tuple[int, ...]:
        try:
            return tuple(int(v) for v in text.split("x"))
        except ValueError:
            raise ValueError(f"reshape {spec!r}: the grid must read HxW (or DxHxW), got {text!r}") from None

    if parts == ["nhwc"]:
        return nhwc
    if parts[0] == "swin" and len(parts) <= 2:
        return swin(grid_of(parts[1]) if len(parts) == 2 else None)
    if parts[0] == "vit" and len(parts) <= 3:
        try:
            count = int(parts[1]) if len(parts) >= 2 else (1 if prefix_tokens is None else prefix_tokens)
        except ValueError:
            raise ValueError(f"reshape {spec!r}: the prefix token count must be an int") from None
        return vit(count, grid_of(parts[2]) if len(parts) == 3 else None)
    raise ValueError(f"unknown reshape {spec!r}: use nhwc, swin[:HxW] or vit[:PREFIX[:HxW]]")

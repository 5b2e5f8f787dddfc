"""Fixed-shape, sync-free selection primitives for batches of problems.

* `radix_select`: order statistics of float32 keys by three 11/11/10-bit histogram passes (no sort, no host k).
* `compact`: the positions of the first C True entries of a bool mask, in order (no `nonzero`).
* `MaskBuffer`: a (b, N, N) bool buffer whose rows are whole int64 words, so that row counts are two
  vectorised reductions (bytes summed as 8 lanes of an int64) instead of a slow bool -> int sum.

Every output has a shape fixed by the inputs' shapes and the requested capacity; nothing is read back
to the host. Counts that tell whether a capacity sufficed are returned as device tensors.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

BYTE_SUM = 0x0101010101010101  # w * BYTE_SUM >> 56 = sum of the 8 bytes of w (each 0 or 1)
HIGH_BITS = -0x7F7F7F7F7F7F7F80  # 0x8080808080808080 as int64: the top bit of every byte


def order_bits(keys: Tensor) -> Tensor:
    """float32 -> int32 with the same order (NaN aside): negative floats get their magnitude bits flipped.
    −0.0 sorts before +0.0, so callers canonicalise it (key + 0.0)."""
    bits = keys.view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def from_order_bits(order: Tensor) -> Tensor:
    """The inverse of `order_bits` (the map is an involution)."""
    return (order ^ ((order >> 31) & 0x7FFFFFFF)).view(torch.float32)


LEVELS = ((21, 11), (10, 11), (0, 10))  # (shift, bits) of the three radix digits of a 32-bit pattern


def radix_select(keys: Tensor, ranks: Tensor, digits: int = 3) -> Tensor:
    """(b, L) float32 keys, (b, R) int64 ranks in [0, L) -> (b, R) float32: the rank-th smallest key.

    `digits` < 3 stops early and returns (b, R, 2) bounds instead: the smallest and largest float32 values
    with the chosen leading digits, which bracket the rank-th key (two digits: within 2⁻¹³ relative).

    Radix selection on s, the order-preserving int32 bit pattern of the keys, one 11/11/10-bit digit at a
    time (levels of 2,048 bins: small histograms, cheap to clear and scan at any L). Level k histograms the
    digit over the keys whose higher digits equal those chosen so far (per rank after the first level),
    and its running sum locates the digit holding the rank and the number of keys below it. All of it is
    int32 arithmetic and one scatter-add a level, without boolean masks: with P the prefix s >> (shift +
    bits) (an arithmetic shift is a floor, so prefixes are monotone in s) and v the chosen prefix,
    clamp(P − v, −1, 1) is −1, 0 or 1 for keys below, inside or above the chosen bin, and
    clamp((bins + 1)·that + digit + 1, 0, bins + 1) puts them in bin 0, 1 + digit or bins + 1.
    Exact for any keys without NaN (ties, ±inf); ranks must lie in [0, L) (callers clamp them).
    """
    batch, length = keys.shape
    count = ranks.shape[1]
    device = keys.device
    signed = order_bits(keys)  # (b, L) int32, monotone in the key
    one = torch.ones((), dtype=torch.int64, device=device)
    wanted = ranks  # (b, R): rank still to find among the keys that share the digits chosen so far
    prefix = None  # (b, R) int64: the signed prefix s >> shift of the digits chosen so far
    levels = LEVELS[:digits]
    for shift, bits in levels:
        bins = 1 << bits
        shifted = signed >> shift
        if prefix is None:  # first digit: one histogram serves every rank; s >> 21 lies in [−1024, 1024)
            column = (shifted + bins // 2).long()
            hist = torch.zeros(batch, bins, dtype=torch.int64, device=device).scatter_add_(1, column, one.expand(batch, length))
            cum = hist.cumsum(1)
            chosen = torch.searchsorted(cum, wanted, right=True)
            wanted = wanted - (cum - hist).gather(1, chosen)
            prefix = chosen - bins // 2
        else:
            side = ((shifted >> bits).unsqueeze(1) - prefix.int().unsqueeze(-1)).clamp_(-1, 1)  # (b, R, L)
            column = side.mul_(bins + 1).add_((shifted & (bins - 1)).add_(1).unsqueeze(1)).clamp_(0, bins + 1)
            if count > 1:  # rank r's histogram at columns r·(bins + 2) ...
                column += torch.arange(0, count * (bins + 2), bins + 2, device=device, dtype=torch.int32).view(1, -1, 1)
            column = column.long()
            hist = torch.zeros(batch, count * (bins + 2), dtype=torch.int64, device=device)
            hist = hist.scatter_add_(1, column.view(batch, -1), one.expand(batch, count * length))
            hist = hist.view(batch, count, bins + 2)[..., 1:-1]  # the keys inside the chosen prefix
            cum = hist.cumsum(-1)
            chosen = torch.searchsorted(cum, wanted.unsqueeze(-1), right=True)
            wanted = wanted - (cum - hist).gather(-1, chosen).squeeze(-1)
            prefix = prefix * bins + chosen.squeeze(-1)
    if digits == len(LEVELS):
        return from_order_bits(prefix.int())
    rest = levels[-1][0]  # bits not chosen: 0 for the floor, all ones for the ceiling of the bin
    bounds = from_order_bits(torch.stack([prefix << rest, (prefix << rest) | ((1 << rest) - 1)], -1).int())
    # the bins of ±inf reach into NaN patterns: their floor/ceiling is ∓inf then
    outward = (torch.arange(2, device=device) * 2 - 1) * math.inf  # (−inf, +inf) without a host tensor literal
    return torch.where(bounds.isnan(), outward, bounds)


def compact(mask: Tensor, capacity: int) -> tuple[Tensor, Tensor]:
    """(b, L) contiguous bool with L % 8 == 0 -> positions (b, capacity) int64 of the first `capacity`
    True entries in order (0 past the last one), and count (b,) int64 of all True entries.

    The mask is read as int64 words of 8 bytes (0 or 1 each). Word counts c_w: w·0x0101…01 gathers the
    sum of its bytes in the top byte. With C_w their running sum, slot t lies in the first word with
    C_w > t, i.e. word g(t) = max{w + 1 : C_w <= t}: a scatter-max of w + 1 at C_w and a running max over
    the slots find it without a search. Inside that word the prefix counts P_k (again w·0x0101…01, byte
    k) place the (r+1)-th True byte at the number of lanes with P_k <= r, counted by adding 127 − r to
    every lane and counting the lanes whose top bit stays clear. (Products wrap modulo 2⁶⁴, as int64
    arithmetic does on every torch backend; no lane carries into the next: every lane stays below 256.)
    """
    batch, length = mask.shape
    words = mask.view(torch.int64)  # (b, W)
    per_word = torch.mul(words, BYTE_SUM).bitwise_right_shift_(56)
    cum = per_word.cumsum(1)
    owner = torch.zeros(batch, capacity + 1, dtype=torch.int64, device=mask.device)
    after = torch.arange(1, words.shape[1] + 1, device=mask.device).expand(batch, -1)
    owner.scatter_reduce_(1, cum.clamp(max=capacity), after, reduce="amax")
    owner = owner[:, :capacity].cummax(1).values.clamp_(max=words.shape[1] - 1)  # the word holding each slot
    slots = torch.arange(capacity, device=mask.device)
    rank = (slots - cum.gather(1, owner) + per_word.gather(1, owner)).clamp_(0, 7)
    lanes = torch.mul(words.gather(1, owner), BYTE_SUM)  # prefix counts of True bytes, one per byte lane
    above = (lanes + (127 - rank) * BYTE_SUM) & HIGH_BITS  # lanes whose prefix count exceeds the rank
    within = 8 - ((((above >> 7) & BYTE_SUM) * BYTE_SUM) >> 56)  # (& undoes the sign extension)
    count = cum[:, -1]
    positions = torch.where(slots < count.unsqueeze(1), owner * 8 + within, 0)
    return positions, count


class MaskBuffer:
    """A reusable (b, N, N) bool buffer with rows padded to whole int64 words (padding stays False).

    `mask` is the (b, N, N) view to write into (e.g. `torch.ge(key, lo, out=buffer.mask)`); `row_counts`
    sums each row's bytes as 8 lanes of int64 words, in groups of at most 255 words so no lane carries.
    """

    def __init__(self, batch: int, count: int, device: torch.device) -> None:
        words = max(1, math.ceil(count / 8))
        self.groups = math.ceil(words / 255)
        self.width = 8 * self.groups * math.ceil(words / self.groups)  # padded row length in bytes
        # padding must read False; without padding every byte is written before it is read
        empty = torch.zeros if self.width > count else torch.empty
        self.storage = empty(batch, count, self.width, dtype=torch.bool, device=device)
        self.mask = self.storage[..., :count]

    def row_counts(self) -> Tensor:
        """(b, N) int64 number of True entries in each row."""
        batch, count, width = self.storage.shape
        lanes = self.storage.view(torch.int64).view(batch, count, self.groups, -1).sum(-1)
        return lanes.view(torch.uint8).view(batch, count, -1).sum(-1)

    def compact(self, capacity: int) -> tuple[Tensor, Tensor, Tensor]:
        """`compact` over the whole buffer -> rows (b, C), columns (b, C) int64, count (b,) int64."""
        batch = self.storage.shape[0]
        positions, count = compact(self.storage.view(batch, -1), capacity)
        return positions // self.width, positions % self.width, count


def to_float32_rounded(values: Tensor, toward: float) -> Tensor:
    """float64 -> float32 at or below (toward=-inf) or at or above (toward=+inf) the value, so that a
    bracket only widens: round to nearest, then one float32 step outward (at most one ulp wider than the
    directed rounding). Beyond float32's range: float32 max rounding down, +inf rounding up."""
    return torch.nextafter(values.to(torch.float32), values.new_full((), toward, dtype=torch.float32))

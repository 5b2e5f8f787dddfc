r"""The batched torch clustering engine (CPU and CUDA): quantile ε and DBSCAN from one distance computation,
fixed shapes throughout and a single host read per call.

Per chunk of problems (sized by a memory budget, so B·N² never sits in memory at once):

1. **Keys.** One float32 GEMM gives key_ij ≈ scale²·s_ij for all pairs, with the rigorous bound
   |key_ij − scale²·s_ij| <= β_ij = c(n_i + n_j) + tiny (`fastcam.cluster._gemm`); +inf on the diagonal
   and for padding. T = max β bounds every key's error.
2. **Quantile** (when asked). numpy's "linear" q-quantile of the M = n(n−1) off-diagonal distances needs
   the k-th and (k+1)-th smallest squared distances. A fixed pseudo-random sample of the keys (a Weyl
   sequence of positions) is order-selected by radix histograms (`_select.radix_select`) at the sample
   ranks of k ± 7σ (σ = √(n_s·p(1−p)), the sampling spread): a bracket [a, b]. One pass counts the keys
   below a − 3T and compacts (`_select.compact`) those in [a − 3T, b + 3T]. The exact k-th value lies in
   [L, U], L = k-th smallest lower end key − β and U = (k+1)-th smallest upper end key + β (ends rounded
   outward to float32), found by radix selection in the compacted keys. Only the pairs whose interval
   [key − β, key + β] meets [L, U] are summed in float64 in numpy's order (`_exact`) and sorted; the
   others are counted. √ corrected to IEEE rounding and numpy's two-sided lerp: bit for bit np.quantile.
3. **ε-graph.** With σ = fl(ε·ε) (scikit-learn's comparison) and a per-row bound t_i
   (`PairKeys.threshold_bound`), pairs with key < σ' − t_i are neighbours, key > σ' + t_i are not
   (σ' = scale²·σ, thresholds rounded outward to float32), and every pair inside that band *as seen from
   any row* is re-decided in float64 from the original coordinates, in one canonical (min, max) order,
   rounded like scikit-learn (`_exact.squared_distance_like_sklearn`). A pair decided outright by one row
   and uncertain for the other gets the exact verdict for the uncertain row, which equals the outright
   verdict of the first: the adjacency is symmetric. (Issue 11: the old `i < j` filter re-checked such a
   pair for neither row.) When ε is the quantile, the band lies inside the quantile's bracket and is
   taken from its compacted keys. The adjacency is stored as int16 "label masks" F_ij = 0 (neighbour) or
   2¹⁴ (not), in the key's storage once the key is no longer needed (2 bytes a pair: the masked minimum
   below is then one broadcast OR and one row minimum; int8 cannot hold labels, bits would need an unpack
   per round).
4. **Labels.** Core points have >= min_samples neighbours (self included). Connected components of the
   core graph by min-label propagation: p_i starts at i; a round computes m_i = min_j (F_ij | p_j) — the
   smallest label among core neighbours —, hooks the old root p_{p_i} to m_i (scatter-min) and shortcuts
   by a few pointer jumps p <- p[p] (JUMPS). After a fixed number of rounds (3) one more m tells whether
   every core point already carries the smallest label of its neighbours; then p is the smallest core
   index of each component. Border points take the smallest root among their core neighbours (m_i);
   clusters are numbered by a cumulative sum over "is a root" flags in index order: scikit-learn's
   numbering.

Fixed shapes and sync: sample, bracket, candidate and band capacities are functions of N
(`Capacities.normal`); whether each sufficed, whether the components converged, and the input checks
(finite points, ε > 0, min_samples >= 1, >= 2 points for a quantile) come back as one small flag tensor,
read once per call (`solve`). A problem whose flags fail (ties that overflow a capacity, a component that
needs more rounds, a sample bracket that missed) is recomputed with an exhaustive sample and wider
capacities, one problem at a time, checking convergence after every round (`retry`): the worst case
adds a few host reads per such problem and per propagation round, never a wrong answer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor

from fastcam._deferred import defer
from fastcam.cluster._exact import (
    numpy_lerp,
    sqrt_correctly_rounded,
    squared_distance_like_numpy,
    squared_distance_like_sklearn,
)
from fastcam.cluster._gemm import TINY, PairKeys, pair_keys
from fastcam.cluster._inputs import Deferred, Problem, chunks, finite
from fastcam.cluster._select import MaskBuffer, compact, radix_select, to_float32_rounded

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
SAMPLE_SIGMAS = 7.0
REFINE_ABOVE = 32768  # brackets larger than this are narrowed by a second sample before the radix passes  # sample bracket half-width in standard deviations of the sample rank

#: diagnostics: problems recomputed by `retry` (the fixed-shape path's flags failed) in this process
retried_problems = 0


def _power_of_two(value: float) -> int:
    return 1 << max(3, math.ceil(math.log2(max(1.0, value))))


def _multiple(value: float, of: int) -> int:
    return of * max(1, math.ceil(value / of))


@dataclass(frozen=True)
class Capacities:
    """Fixed sizes of the per-problem work arrays; `rounds` None = propagate until converged (sync each)."""

    sample: int
    bracket: int
    candidates: int
    band: int
    refine: int = 0  # second-stage sample of the compacted bracket (0: none)
    narrow: int = 0  # capacity of the narrowed bracket
    rounds: int | None = 3
    band_from_bracket: bool = True  # quantile_dbscan: take the ε band from the quantile's bracket

    @staticmethod
    def normal(count: int) -> "Capacities":
        """Sizes for N points. The sample S ≈ (7M)^(2/3) (M = N(N−1)) balances its radix pass against the
        bracket, which holds ≈ 2·6σ·M/S <= 6M/√S keys plus the ±2T margin (14M/√S reserved). Exact
        candidates and band pairs: at most ~N/4 and ~N/2.5 measured on real and synthetic layer4
        activations (N = 64 … 2,048, q = 0.1, 0.25, 0.5); N and 2N reserved."""
        cells = count * count
        pairs = max(1, count * (count - 1))
        sample = cells if cells <= 4096 else min(cells, _power_of_two((7 * pairs) ** (2 / 3)))
        bracket = min(_multiple(cells, 8), _multiple(14 * pairs / math.sqrt(sample), 1024))
        refine = narrow = 0
        if bracket > REFINE_ABOVE:  # holds up to ~bracket/1.5 keys; a sample of 8k narrows their ends ~10x
            refine = 8192
            narrow = _multiple(14 * (bracket / 1.5) / math.sqrt(refine), 1024)
        return Capacities(sample, bracket, _multiple(max(64, count), 8), _multiple(max(64, 2 * count), 8), refine, narrow)

    def widened(self, count: int, factor: int) -> "Capacities":
        """Every capacity × factor (at most all pairs), an exhaustive sample, propagation until convergence,
        the band from its own pass (an eps_floor above the quantile puts it outside the bracket)."""
        cells = _multiple(count * count, 8)
        return replace(
            self,
            sample=count * count,
            refine=0,
            narrow=0,
            band_from_bracket=False,
            bracket=min(cells, self.bracket * factor),
            candidates=min(cells, self.candidates * factor),
            band=min(cells, self.band * factor),
            rounds=None,
        )

    def bytes_per_problem(self, count: int, dims: int) -> int:
        """Peak temporaries: key 4N², two mask buffers 2N², compaction words ~3N², the GEMM operands,
        the sample and bracket radix passes, the float64 exact checks (16·D bytes a pair)."""
        return 9 * count * count + 16 * count * (dims + 2) + 40 * self.sample + 80 * self.bracket + (
            16 * dims + 64) * (self.candidates + self.band)


class Bracket(NamedTuple):
    """The keys of a quantile's bracket, compacted: reused by the ε-graph of `quantile_dbscan`, whose band
    around ε² = (a quantile)² lies inside it."""

    rows: Tensor  # (b, C1) int64 point indices (0 past `found`)
    cols: Tensor  # (b, C1) int64
    keys: Tensor  # (b, C1) float32 keys (+inf past `found`)
    low: Tensor  # (b,) float32: every key >= low and <= high is in here (when found <= C1)
    high: Tensor  # (b,)


class ChunkResult(NamedTuple):
    labels: Tensor | None  # (b, N) int64
    eps: Tensor | None  # (b,) float64: the quantile (pairwise_quantile) or the ε used (quantile_dbscan)
    ok: Tensor  # (b,) bool: every capacity sufficed and the components converged


# ------------------------------------------------------------------------------------------- quantile
def _quantile_ranks(counts: Tensor, level: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """numpy's linear method over M = n(n−1) ordered pairs -> ranks k_lo, k_hi (int64), γ, M (float64)."""
    total = (counts * (counts - 1)).double()
    virtual = (total - 1) * level  # numpy: (n - 1) * quantiles
    previous = torch.floor(virtual)
    gamma = virtual - previous
    last = (total - 1).clamp_min(0)
    low = torch.minimum(previous.clamp_min(0), last).long()
    high = torch.minimum(previous + 1, last).clamp_min(0).long()
    return low, high, gamma, total


def _sample_bracket(
    values: Tensor, extent: Tensor | int, population: Tensor, ranks: Tensor, size: int, finite_only: bool = True
) -> tuple[Tensor, Tensor]:
    """(b,) float64 a <= v_{k_lo} and b >= v_{k_hi} with high probability, from `size` of the first `extent`
    values of each row at Weyl-sequence positions: the sample's order statistics at the ranks
    k·n_s/M ∓ (7σ + 4), σ the sampling spread. The population (M values) is the finite ones
    (`finite_only`: +inf marks entries outside it, e.g. the diagonal) or all `extent` of them.
    −inf/+inf where the bracket reaches past the sample; exact (a = v_lo, b = v_hi) when size >= L."""
    batch, length = values.shape
    if size >= length:
        sample, chosen, present = values, ranks, population.long()
    else:
        t = torch.arange(size, device=values.device, dtype=torch.float64)
        positions = torch.frac((t + 0.5) * GOLDEN) * (extent.unsqueeze(1) if isinstance(extent, Tensor) else extent)
        sample = values.gather(1, positions.long().expand(batch, -1))
        present = (sample < math.inf).sum(1, keepdim=True) if finite_only else torch.full_like(population, size).unsqueeze(1)
        expected = ranks * (present / population.clamp_min(1).unsqueeze(1))  # sample ranks of the wanted ones
        spread = SAMPLE_SIGMAS * torch.sqrt(expected * (1 - expected / present.clamp_min(1))) + 4
        chosen = (expected + torch.cat([-spread[:, :1], spread[:, 1:]], 1)).long()  # (no tensor literal: an H2D copy)
        present = present.squeeze(1)
    # two radix digits suffice: the bin's floor/ceiling bracket the sample's order statistic (2⁻¹³ relative)
    bounds = radix_select(sample, chosen.clamp(0, sample.shape[1] - 1), digits=2).double()
    low = torch.where(chosen[:, 0] < 0, -math.inf, bounds[:, 0, 0])
    high = torch.where(chosen[:, 1] >= present, math.inf, bounds[:, 1, 1])
    return low, high


def select_quantile(
    keys: PairKeys, points: Tensor, valid: Tensor, level: float, capacities: Capacities, masks: tuple[MaskBuffer, MaskBuffer]
) -> tuple[Tensor, Tensor, Bracket]:
    """(b,) float64 q-quantile of the pairwise distances (bit for bit numpy's), (b,) bool ok, and the
    compacted bracket."""
    batch, count = valid.shape
    counts = valid.sum(1)
    low_rank, high_rank, gamma, total = _quantile_ranks(counts, level)
    ranks = torch.stack([low_rank, high_rank], 1)
    margin = keys.row_bound().amax(1)  # T: bounds every key's error
    key = keys.key
    flat = key.view(batch, -1)
    sample_low, sample_high = _sample_bracket(flat, flat.shape[1], total, ranks, capacities.sample)

    # every key within [a − 3T, b + 3T]: counted below it, compacted inside it
    inside, upper = masks
    range_low = to_float32_rounded(sample_low - 3 * margin, toward=-math.inf)
    range_high = to_float32_rounded(sample_high + 3 * margin, toward=math.inf)
    torch.ge(key, range_low.view(-1, 1, 1), out=inside.mask)
    below = count * count - inside.row_counts().sum(1)
    torch.le(key, range_high.view(-1, 1, 1), out=upper.mask)
    inside.storage &= upper.storage
    rows, cols, found = inside.compact(capacities.bracket)  # empty slots: (0, 0), whose key is +inf
    approx = flat.gather(1, rows * count + cols)
    bracket = Bracket(rows, cols, approx, range_low, range_high)
    wanted = ranks - below.unsqueeze(1)
    ok = (counts >= 2) & (found <= capacities.bracket) & (wanted[:, 0] >= 0) & (wanted[:, 1] < found)
    beta = (keys.norms.gather(1, rows) + keys.norms.gather(1, cols)) * keys.coefficient_up + TINY  # >= c(n_i + n_j) + tiny
    lower = torch.nextafter(approx - beta, key.new_full((), -math.inf))  # <= key − β: under the exact value
    upper_end = torch.nextafter(approx + beta, key.new_full((), math.inf))  # >= key + β: over it

    # the exact k-th value lies in [L, U]: L = k_lo-th smallest lower end, U = k_hi-th smallest upper end.
    # A key outside the compacted range has both ends below a − 3T + 1.01T or above b + 3T − 1.01T (β <=
    # 1.01T, float32 rounding aside), so it cannot change L or U as long as a − 1.5T <= L and U <= b + 1.5T
    ends = torch.cat([lower, upper_end])  # (2b, C1): rows 0..b-1 lower ends, rows b.. upper ends
    end_ranks = wanted.t().reshape(-1, 1)
    if capacities.refine:  # a second sample, of the ends themselves, narrows them before the radix passes
        present = torch.cat([found, found]).double()
        low2, high2 = _sample_bracket(ends, present, present, end_ranks.expand(-1, 2), capacities.refine, finite_only=False)
        low2, high2 = low2.float().unsqueeze(1), high2.float().unsqueeze(1)  # float32 values (or ±inf): exact
        real = torch.arange(ends.shape[1], device=key.device) < present.unsqueeze(1)  # not the empty slots
        chosen, kept = compact((ends >= low2) & (ends <= high2) & real, capacities.narrow)
        end_ranks = end_ranks - (ends < low2).sum(1, keepdim=True)
        ok &= ((kept <= capacities.narrow) & (end_ranks[:, 0] >= 0) & (end_ranks[:, 0] < kept)).view(2, -1).all(0)
        slots = torch.arange(capacities.narrow, device=key.device)
        ends = torch.where(slots < kept.unsqueeze(1), ends.gather(1, chosen), math.inf)
    edges = radix_select(ends, end_ranks.clamp(0, ends.shape[1] - 1))
    low_edge, high_edge = edges[:batch], edges[batch:]
    ok &= (low_edge[:, 0] >= sample_low - 1.5 * margin) & (high_edge[:, 0] <= sample_high + 1.5 * margin)
    certainly_below = upper_end < low_edge
    wanted = wanted - certainly_below.sum(1, keepdim=True)
    chosen, candidates = compact(~certainly_below & (lower <= high_edge), capacities.candidates)
    problem = torch.arange(batch, device=key.device).unsqueeze(1)
    exact = squared_distance_like_numpy(points, problem, rows.gather(1, chosen), cols.gather(1, chosen))
    taken = torch.arange(capacities.candidates, device=key.device) < candidates.unsqueeze(1)
    exact = torch.where(taken, exact, math.inf).sort(1).values
    ok &= (candidates <= capacities.candidates) & (wanted[:, 0] >= 0) & (wanted[:, 1] < candidates)
    roots, decided = sqrt_correctly_rounded(exact.gather(1, wanted.clamp(0, capacities.candidates - 1)))
    ok &= decided.all(1)
    return numpy_lerp(roots[:, 0], roots[:, 1], gamma), ok, bracket


# ------------------------------------------------------------------------------------------- ε-graph
JUMPS = 3  # pointer jumps per round: on real and synthetic activations 2 already converge as fast as log2 N
FAR = 1 << 14  # label-mask bit of a non-neighbour (labels are < N <= 16382 in int16)


class Graph(NamedTuple):
    masks: Tensor  # (b, N, N) int16/int32: 0 where j is i's neighbour, FAR otherwise (a view into the key's storage)
    scratch: Tensor  # same shape and dtype, for the propagation rounds
    degree: Tensor  # (b, N) int64 neighbours, self included (0 for padding)
    ok: Tensor  # (b,) bool: the band fitted its capacity


def epsilon_graph(
    keys: PairKeys,
    points: Tensor,
    valid: Tensor,
    eps: Tensor,
    capacities: Capacities,
    masks: tuple[MaskBuffer, MaskBuffer],
    bracket: Bracket | None = None,
) -> Graph:
    """The ε-graph of each problem from the keys (module docstring, step 3). Consumes keys.key's storage.

    With a quantile's `bracket` (ε from that quantile), the band pairs are taken from the bracket's keys
    instead of a second pass over all N² keys; a problem whose band reaches outside the bracket (an
    eps_floor above the quantile) is flagged for the fallback.
    """
    batch, count = valid.shape
    key = keys.key
    sigma = eps * eps  # float64, rounded exactly as scikit-learn rounds its radius
    scaled = sigma * keys.scale * keys.scale
    bound = keys.threshold_bound(scaled)
    scaled = scaled.unsqueeze(1)
    low = to_float32_rounded(scaled - bound, toward=-math.inf)
    high = to_float32_rounded(scaled + bound, toward=math.inf).clamp_(max=FLOAT32_MAX)
    far, band = masks
    torch.ge(key, low.unsqueeze(2), out=far.mask)  # not certainly a neighbour
    outside = far.row_counts()
    if bracket is None:
        torch.le(key, high.unsqueeze(2), out=band.mask)
        band.storage &= far.storage  # within the error bound of ε², for this row
        rows, cols, found = band.compact(capacities.band)
        ok = found <= capacities.band
    else:
        row_low, row_high = low.gather(1, bracket.rows), high.gather(1, bracket.rows)
        chosen, found = compact((bracket.keys >= row_low) & (bracket.keys <= row_high), capacities.band)
        empty = torch.arange(capacities.band, device=key.device) >= found.unsqueeze(1)
        # empty slots must point at (0, 0), whose cell is reset below, not at the bracket's first pair
        rows = bracket.rows.gather(1, chosen).masked_fill_(empty, 0)
        cols = bracket.cols.gather(1, chosen).masked_fill_(empty, 0)
        inside = (torch.where(valid, low, math.inf).amin(1) >= bracket.low) & (
            torch.where(valid, high, -math.inf).amax(1) <= bracket.high)
        ok = (found <= capacities.band) & (inside | (valid.sum(1) < 2))
    problem = torch.arange(batch, device=key.device).unsqueeze(1)
    counts = valid.sum(1)
    # one canonical order per pair: both rows of a pair get the same float64 verdict
    exact = squared_distance_like_sklearn(points, problem, torch.minimum(rows, cols), torch.maximum(rows, cols), counts)
    near = (torch.arange(capacities.band, device=key.device) < found.unsqueeze(1)) & (exact <= sigma.unsqueeze(1))

    if count < FAR - 1:  # int16 label masks, written over the dead key: F in one half of each row, scratch in the other
        halves = key.view(torch.int16)
        graph, scratch = halves[..., :count], halves[..., count:]
        far_value = FAR
    else:  # pragma: no cover - N >= 16,383 points per problem
        graph, scratch = key.view(torch.int32), torch.empty_like(key, dtype=torch.int32)
        far_value = 1 << 30
    graph.copy_(far.mask)
    graph.bitwise_left_shift_(far_value.bit_length() - 1)
    graph[problem, rows, cols] = torch.where(near, 0, far_value).to(graph.dtype)  # empty slots hit (0, 0): reset below
    graph.diagonal(dim1=1, dim2=2).copy_(torch.where(valid, 0, far_value))
    degree = (count - outside).scatter_add_(1, rows, near.long()) + valid.long()
    return Graph(graph, scratch, degree, ok)


# ------------------------------------------------------------------------------------------- labels
def _neighbour_min(graph: Graph, parent: Tensor) -> Tensor:
    """(b, N) int64 smallest parent label among each point's core neighbours (N: none)."""
    count = graph.masks.shape[1]
    labels = parent[:, :count].to(graph.masks.dtype).unsqueeze(1)
    smallest = torch.bitwise_or(graph.masks, labels, out=graph.scratch).amin(-1)
    return smallest.long().clamp_(max=count)


def label_components(graph: Graph, valid: Tensor, min_samples: Tensor, rounds: int | None) -> tuple[Tensor, Tensor]:
    """(b, N) int64 scikit-learn labels and (b,) bool converged (module docstring, step 4).

    Labels live in (b, N + 1) tensors whose last slot N is a sink ("no core neighbour"), its own root,
    so that non-core points and pointer jumps need no masking. `rounds` None: propagate until every problem
    has converged, with one host read per round (the fallback path).
    """
    batch, count = valid.shape
    core = valid & (graph.degree >= min_samples.unsqueeze(1))
    core_ext = torch.cat([core, torch.zeros_like(core[:, :1])], 1)
    index = torch.arange(count + 1, device=valid.device).expand(batch, -1)
    parent = torch.where(core_ext, index, count)
    jumps = JUMPS
    smallest = _neighbour_min(graph, parent)
    done = 0
    while True:
        if rounds is not None and done == rounds:
            break
        offer = torch.where(core_ext, torch.cat([smallest, index[:, count:]], 1), count)  # only core points hook
        hooked = torch.minimum(parent, offer).scatter_reduce_(1, parent, offer, reduce="amin")
        for _ in range(jumps):
            hooked = hooked.gather(1, hooked)
        parent = hooked
        smallest = _neighbour_min(graph, parent)
        done += 1
        if rounds is None and bool((~core | (smallest == parent[:, :count])).all()):  # fallback: sync per round
            break
    converged = (~core | (smallest == parent[:, :count])).all(1)
    target = torch.where(core, parent[:, :count], smallest)  # a border point: smallest root among core neighbours
    found = valid & (target < count)
    rank = torch.cumsum(core & (parent[:, :count] == index[:, :count]), 1) - 1  # clusters by smallest core index
    labels = torch.where(found, rank.gather(1, target.clamp(max=count - 1)), -1)
    return labels, converged


# ------------------------------------------------------------------------------------------- driver
def run_chunk(
    points: Tensor,
    valid: Tensor,
    capacities: Capacities,
    *,
    level: float | None = None,
    eps_floor: float | None = None,
    eps: Tensor | None = None,
    min_samples: Tensor | None = None,
) -> ChunkResult:
    """One chunk: keys once; the quantile if `level` is given (the raw quantile, or with `eps_floor`
    ε = max(quantile, eps_floor), eps_floor alone for a problem with < 2 points); then DBSCAN with that
    ε or the given `eps` if `min_samples` is given."""
    batch, count, _ = points.shape
    keys = pair_keys(points, valid)
    masks = (MaskBuffer(batch, count, points.device), MaskBuffer(batch, count, points.device))
    ok = torch.ones(batch, dtype=torch.bool, device=points.device)
    bracket = None
    if level is not None:
        eps, ok, bracket = select_quantile(keys, points, valid, level, capacities, masks)
        if eps_floor is not None:
            paired = valid.sum(1) >= 2
            eps = torch.where(paired, eps.clamp_min(eps_floor), eps_floor)
            ok = ok | ~paired
    if min_samples is None:
        return ChunkResult(None, eps, ok)
    graph = epsilon_graph(keys, points, valid, eps, capacities, masks, bracket if capacities.band_from_bracket else None)
    labels, converged = label_components(graph, valid, min_samples, capacities.rounds)
    return ChunkResult(labels, eps, ok & graph.ok & converged)


def run(
    points: Tensor,
    valid: Tensor,
    budget: int,
    *,
    level: float | None = None,
    eps_floor: float | None = None,
    eps: Tensor | None = None,
    min_samples: Tensor | None = None,
    capacities: Capacities | None = None,
) -> ChunkResult:
    """`run_chunk` over chunks that fit `budget` bytes; per-problem eps/min_samples are sliced along."""
    batch, count, dims = points.shape
    capacities = capacities or Capacities.normal(count)
    results = []
    for start, stop in chunks(batch, capacities.bytes_per_problem(count, dims), budget):
        results.append(
            run_chunk(
                points[start:stop],
                valid[start:stop],
                capacities,
                level=level,
                eps_floor=eps_floor,
                eps=None if eps is None else eps[start:stop],
                min_samples=None if min_samples is None else min_samples[start:stop],
            )
        )
    if len(results) == 1:
        return results[0]
    labels = None if results[0].labels is None else torch.cat([r.labels for r in results])
    values = None if results[0].eps is None else torch.cat([r.eps for r in results])
    return ChunkResult(labels, values, torch.cat([r.ok for r in results]))


def retry(
    result: ChunkResult,
    failed: list[int],
    points: Tensor,
    valid: Tensor,
    budget: int,
    **options: object,
) -> ChunkResult:
    """Recompute the `failed` problems one at a time with wider capacities until their flags pass.

    The fallback of the fixed-shape path (adversarial ties, slow-converging components): each attempt
    reads its flag back, so this path syncs; capacities grow 16× per attempt up to all N² pairs.
    """
    global retried_problems
    retried_problems += len(failed)
    count = points.shape[1]
    labels = None if result.labels is None else result.labels.clone()
    values = None if result.eps is None else result.eps.clone()
    for b in failed:
        sliced = {k: (v[b : b + 1] if isinstance(v, Tensor) else v) for k, v in options.items()}
        capacities = Capacities.normal(count)
        factor = 16
        while True:
            capacities = capacities.widened(count, factor)
            again = run(points[b : b + 1], valid[b : b + 1], budget, capacities=capacities, **sliced)
            full = min(capacities.band, capacities.candidates, capacities.bracket) >= count * count
            if bool(again.ok[0]) or full:
                break
        if not bool(again.ok[0]):  # pragma: no cover - the bounds make this impossible
            raise RuntimeError("fastcam.cluster: exact selection failed even with every pair (please report this bug)")
        if labels is not None:
            labels[b] = again.labels[0]
        if values is not None:
            values[b] = again.eps[0]
    return ChunkResult(labels, values, torch.ones_like(result.ok))


def solve(
    problem: Problem,
    budget: int,
    *,
    level: float | None = None,
    eps_floor: float | None = None,
    eps: Deferred | None = None,
    min_samples: Deferred | None = None,
    caller: str = "dbscan",
) -> ChunkResult:
    """`run` + the call's one host read: input checks, capacity/convergence flags, then `retry` if needed.

    Raises ValueError for NaN/Inf among the valid points, invalid ε or min_samples values given as tensors,
    a raw quantile (no `eps_floor`) of a problem with < 2 valid points, or ε = max(quantile, eps_floor)
    <= 0 for a problem with valid points.
    """
    options = dict(
        level=level,
        eps_floor=eps_floor,
        eps=None if eps is None else eps.values,
        min_samples=None if min_samples is None else min_samples.values,
    )
    result = run(problem.points, problem.valid, budget, **options)
    counts = problem.valid.sum(1)
    checks = {"finite": finite(problem), "ok": result.ok}
    for name, deferred in (("eps", eps), ("min_samples", min_samples)):
        if deferred is not None and deferred.ok is not None:
            checks[name] = deferred.ok
    if level is not None:
        checks["pairs"] = counts >= 2 if eps_floor is None else (result.eps > 0) | (counts == 0)
    flags = torch.stack(list(checks.values()))
    if defer(flags.bool()):  # CUDA graph capture: the flags are read after the replay (`fastcam.graphed`)
        return result
    host = dict(zip(checks, flags.tolist()))  # the call's one host read
    if not all(host["finite"]):
        raise ValueError("points contain NaN or Inf values (among the valid points)")
    for name, deferred in (("eps", eps), ("min_samples", min_samples)):
        if name in host and not all(host[name]):
            deferred.explain()
    if "pairs" in host and not all(host["pairs"]):
        first = host["pairs"].index(False)
        if eps_floor is None:
            raise ValueError(f"{caller} needs at least 2 valid points per problem; problem {first} has {int(counts[first])}")
        raise ValueError(
            f"{caller}: eps is 0 for problem {first} (a fraction q of its pairs are duplicates, or it has fewer "
            f"than 2 valid points and eps_floor is 0): pass eps_floor > 0"
        )
    failed = [b for b, ok in enumerate(host["ok"]) if not ok]
    if failed:
        result = retry(result, failed, problem.points, problem.valid, budget, **options)
    return result


def epsilon_adjacency(points: Tensor, valid: Tensor, eps: Tensor | None = None, level: float | None = None) -> tuple[Tensor, Tensor]:
    """(b, N, N) bool ε-graph exactly as `run_chunk` builds it (self included), and (b,) bool ok (every
    capacity sufficed), for tests and diagnostics: with `eps` as `dbscan` builds it (its own band pass),
    with `level` as `quantile_dbscan` builds it (ε = the quantile, band from the quantile's bracket).
    points (b, N, D) float64, eps (b,) float64."""
    batch, count, _ = points.shape
    capacities = Capacities.normal(count)
    keys = pair_keys(points, valid)
    masks = (MaskBuffer(batch, count, points.device), MaskBuffer(batch, count, points.device))
    ok, bracket = torch.ones(batch, dtype=torch.bool, device=points.device), None
    if level is not None:
        eps, ok, bracket = select_quantile(keys, points, valid, level, capacities, masks)
    graph = epsilon_graph(keys, points, valid, eps, capacities, masks, bracket)
    return graph.masks == 0, ok & graph.ok

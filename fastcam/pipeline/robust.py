"""The robust call of one batch: out-of-memory halving and non-finite dropping.

`explain_finite` is what the dataset loop (`fastcam.pipeline.loop`) calls per batch: a CUDA out-of-memory
error halves the batch (and later batches start at the size that worked), and images whose explanation is
non-finite are left out with the reason, never stored as NaN.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor

from fastcam._validation import NonFiniteError
from fastcam.methods.base import Explainer

#: (maps, lowres, logits, targets) of the explained rows of a batch
Explained = tuple[Tensor, Tensor, Tensor, Tensor]

__all__ = ["Explained", "explain_finite", "explain_splitting_on_oom", "select_targets"]


def explain_splitting_on_oom(explainer: Explainer, images: Tensor, targets: Any, amp: torch.dtype | None,
                             state: dict[str, int]) -> Explained:
    """(maps, lowres, logits, targets) of a batch; on CUDA out-of-memory the batch is halved and retried
    (recursively), and later batches start at the size that worked (`state["micro"]`).

    A `NonFiniteError` of a part is raised again with its indices counted in the whole batch.
    """
    micro = state.get("micro", images.shape[0])
    if micro < images.shape[0]:
        parts = []
        for start in range(0, images.shape[0], micro):
            rows = torch.arange(start, min(start + micro, images.shape[0]))
            try:
                parts.append(explain_splitting_on_oom(explainer, images[rows], select_targets(targets, rows),
                                                      amp, state))
            except NonFiniteError as exc:
                raise NonFiniteError(exc.reason, [start + i for i in exc.indices]) from exc
        return tuple(torch.cat(p) for p in zip(*parts))  # type: ignore[return-value]
    try:
        autocast = torch.autocast(images.device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
        with autocast:
            exp = explainer.explain(images, targets)
        return exp.maps, exp.lowres, exp.logits, exp.targets
    except torch.OutOfMemoryError:
        if images.shape[0] == 1:
            raise
        if images.is_cuda:
            torch.cuda.empty_cache()
        state["micro"] = max(1, images.shape[0] // 2)
        return explain_splitting_on_oom(explainer, images, targets, amp, state)


def explain_finite(explainer: Explainer, images: Tensor, targets: Any, amp: torch.dtype | None,
                   state: dict[str, int]) -> tuple[Tensor, Explained | None, dict[int, str]]:
    """Explain a batch, leaving out the images whose explanation is non-finite.

    Returns (rows kept, their (maps, lowres, logits, targets) or None when none is kept, {row: reason}
    of the rows left out). The explainer names bad images with a `NonFiniteError` (the rest are explained
    again without them); any NaN/Inf that still reaches the maps or logits leaves its image out too.
    """
    keep = torch.arange(images.shape[0])
    dropped: dict[int, str] = {}
    while keep.numel():
        try:
            explained = explain_splitting_on_oom(explainer, images[keep.to(images.device)],
                                                 select_targets(targets, keep), amp, state)
        except NonFiniteError as exc:
            if not exc.indices:  # names no image: nothing to leave out, so it cannot be worked around
                raise
            bad = torch.zeros(keep.numel(), dtype=torch.bool)
            bad[exc.indices] = True
            dropped.update({int(row): exc.reason for row in keep[bad]})
            keep = keep[~bad]
            continue
        _, lowres, logits, _ = explained
        finite = (torch.isfinite(lowres).flatten(1).all(dim=1) & torch.isfinite(logits).all(dim=1)).cpu()
        if bool(finite.all()):
            return keep, explained, dropped
        dropped.update({int(row): "the explanation (maps or logits)" for row in keep[~finite]})
        if not bool(finite.any()):
            return keep[finite], None, dropped
        # explanations are per image, so the finite rows stand as they are
        return keep[finite], tuple(t[finite.to(t.device)] for t in explained), dropped  # type: ignore[return-value]
    return keep, None, dropped  # every image was named by a NonFiniteError


def select_targets(targets: Any, rows: Tensor) -> Any:
    """The targets of `rows` of a batch: per-image targets are indexed, one class for all stays."""
    return targets[rows.to(targets.device)] if isinstance(targets, Tensor) else targets

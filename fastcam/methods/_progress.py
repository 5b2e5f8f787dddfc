"""The opt-in progress bar of the methods whose call runs many forwards (Score-CAM family, Ablation-CAM)."""
from __future__ import annotations

from collections.abc import Iterator


def chunk_starts(total: int, size: int, *, show: bool, desc: str) -> Iterator[int]:
    """The start rows of the chunks of `size` rows over `total`, advancing a tqdm bar (in rows) when `show`."""
    if not show:
        yield from range(0, total, size)
        return
    from tqdm.auto import tqdm  # imported only when asked for

    with tqdm(total=total, desc=desc, unit="input", dynamic_ncols=True, leave=False) as bar:
        for start in range(0, total, size):
            yield start
            bar.update(min(size, total - start))


def check_progress(progress: object) -> bool:
    """`progress=` of a method: a bool (a TypeError otherwise)."""
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    return progress

"""Damage: one problem of a run directory (which file, what is wrong, which batches and samples)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence


def describe_samples(rank: int, world: int, rows: Sequence[int], ids: Sequence[Any] | None = None) -> str:
    """The dataset samples of shard rows `rows`: "samples 6-7 ('a.png' to 'b.png')"."""
    index = [rank + world * r for r in rows]
    if not index:
        return "no samples"
    if len(index) == 1:
        text = f"sample {index[0]}"
    elif world == 1 and index == list(range(index[0], index[-1] + 1)):
        text = f"samples {index[0]}-{index[-1]}"
    else:
        text = f"samples {index[0]}, {index[1]}, ..., {index[-1]}" if len(index) > 2 else f"samples {index[0]}, {index[1]}"
    if ids is not None and index[-1] < len(ids):
        text += f" ({ids[index[0]]!r}" + (f" to {ids[index[-1]]!r})" if len(index) > 1 else ")")
    return text


def relative_path(path: Path, root: Path) -> str:
    """`path` relative to the run directory `root` (as given when it is outside)."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Damage:
    """One problem of a run directory: the file or folder, what is wrong, and the batches it affects.

    Attributes:
        path: the damaged (or missing) file or folder, relative to the run directory.
        problem: what is wrong with it.
        rank: the shard the batches belong to.
        batches: the batches of shard `rank` it makes unreadable (empty for run-wide files).
        samples: those batches' samples, described (`describe_samples`).
    """

    path: str
    problem: str
    rank: int = 0
    batches: tuple[int, ...] = ()
    samples: str = ""

    def __str__(self) -> str:
        where = ""
        if self.batches:
            b = self.batches
            if len(b) == 1:
                where = f" (batch {b[0]}"
            elif list(b) == list(range(b[0], b[-1] + 1)):
                where = f" (batches {b[0]}-{b[-1]}"
            else:
                where = f" ({len(b)} batches: {', '.join(map(str, b[:4]))}{', ...' if len(b) > 4 else ''}"
            where += f": {self.samples})" if self.samples else ")"
        return f"{self.path}: {self.problem}{where}"

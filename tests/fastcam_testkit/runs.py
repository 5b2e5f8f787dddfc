"""Small stored runs: random images on disk, a saved tiny model, and the run directory's file names."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from fastcam.io.run import SCHEMA, RunDirectory, ShardWriter
from fastcam.models import tiny_resnet


def random_pngs(folder: Path, count: int, size: int, seed: int = 0) -> list[str]:
    """`count` random RGB PNGs im0.png, im1.png, ... of size × size in `folder` (created); their names."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"im{i}.png" for i in range(count)]
    for name in names:
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(folder / name)
    return names


def saved_tiny_resnet(root: Path, num_classes: int = 3) -> tuple[torch.nn.Module, Path]:
    """A seeded `tiny_resnet` in eval mode and its weights saved as root/w.safetensors."""
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=num_classes).eval()
    weights = root / "w.safetensors"
    save_file(model.state_dict(), str(weights))
    return model, weights


#: a run directory's names relative to its root, as `RunDirectory` gives them (tests name no file themselves)
LAYOUT = RunDirectory(Path())


def chunk_name(array: str, batch: int, rank: int = 0, world: int = 1, map_ndim: int = 2) -> str:
    """The chunk file of batch `batch` in array `array` of shard `rank` of `world`, relative to the run
    directory (maps of `map_ndim` dimensions)."""
    ndim = 1 + len(SCHEMA[array].tail_shape((0,) * map_ndim, 0))
    return LAYOUT.chunk(rank, world, array, batch, ndim).as_posix()


def progress_name(rank: int = 0, world: int = 1) -> str:
    """The commit record of shard `rank` of `world`, relative to the run directory."""
    return LAYOUT.progress(rank, world).as_posix()


def write_synthetic_run(root: Path, n: int, *, world: int = 1, batch_size: int = 4, dtype: str = "float32",
                        spatial: tuple[int, ...] = (3, 3), classes: int = 5, skip: frozenset[int] = frozenset(),
                        seed: int = 0, ids: list[Any] | None = None) -> list[Any]:
    """A complete run of `n` random samples written through the store alone (`ShardWriter`, every rank in
    this process), dataset indices in `skip` marked skipped; its ids (`ids`, default "s/0000000.png", ...)."""
    ids = [f"s/{i:07d}.png" for i in range(n)] if ids is None else ids
    directory = RunDirectory(root)
    directory.create(ids, {"method": "gradcam", "batch_size": batch_size, "world_size": world},
                     input_size=tuple(4 * s for s in spatial), versions={})
    g = torch.Generator().manual_seed(seed)
    for rank in range(world):
        writer = ShardWriter(root, rank, world, n_items=n, batch_size=batch_size, dtype=dtype)
        for batch in range(writer.num_batches):
            rows = writer.batch_rows(batch)
            index = np.arange(rows.start, rows.stop) * world + rank
            ok = torch.from_numpy(~np.isin(index, list(skip)))
            k = int(ok.sum())
            lowres = torch.rand(k, *spatial, generator=g) * torch.rand(k, *([1] * len(spatial)), generator=g) * 5
            logits = torch.randn(k, classes, generator=g)
            targets = torch.randint(0, classes, (k,), generator=g)
            skipped = [{"index": int(i), "id": ids[i], "error": "unreadable"} for i in index[~ok.numpy()]]
            writer.write_batch(batch, ok, lowres, logits, targets)
            writer.commit(batch, skipped, 0.01, k, "cpu")
    directory.finalize("cpu")
    return ids

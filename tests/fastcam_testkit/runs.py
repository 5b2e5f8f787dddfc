"""Small stored runs: random images on disk, a saved tiny model, and the run directory's file names."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from fastcam.io.run import SCHEMA, RunDirectory
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

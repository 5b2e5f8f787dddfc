"""Run directories for the report tests: image folders with file names that HTML writers and browsers get
wrong, explained by a tiny model with overlays."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

#: file names a browser or an HTML writer can get wrong (URL-reserved, HTML-special, non-ASCII), and a
#: pair whose old overlay names collided ("x.jpg" and "x.jpg.png" both wrote "x.jpg.png")
HOSTILE = ["pct%41.png", "pctA.png", "sp ace.png", "hash#1.png", "q?x=1.png", "quo\"te'.png", "lt<b>&amp;.png",
           "ünïcødé 日本.png", "x.jpg", "x.jpg.png"]


def write_image(folder: Path, name: str, seed: int, size: int = 16) -> None:
    """A random RGB image (its own pixels per seed), JPEG for a .jpg name, PNG otherwise."""
    pixels = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG" if name.endswith(".jpg") else "PNG", quality=95)


def write_hostile_folder(data: Path) -> None:
    """HOSTILE images, one in a sub-folder with a space and a '#', and one unreadable file whose name is
    markup (it is skipped, and its name shows in the reason)."""
    for i, name in enumerate(HOSTILE):
        write_image(data, name, seed=i)
    write_image(data, "sub dir/in#ner.png", seed=99)
    (data / "<b onmouseover=alert(6)>.png").write_bytes(b"not an image")


def explain_with_overlays(data: Path, out: Path, method: str = "gradcam", seed: int = 0) -> Any:
    """A tiny 3-class ResNet explains `data` into `out` with overlays, on one CPU thread."""
    import fastcam
    from fastcam.io.images import Preprocess
    from fastcam.models import tiny_resnet

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared 2-core machine (see the one_thread fixture)
    try:
        torch.manual_seed(seed)
        model = tiny_resnet(num_classes=3).eval()
        return fastcam.explain_dataset(model, str(data), method=method, target_layer="layer4", out=out, batch_size=4,
                                       device="cpu", preprocess=Preprocess(channels=3), progress=False, overlays=True,
                                       model_info={"spec": "tiny_resnet"})
    finally:
        torch.set_num_threads(threads)

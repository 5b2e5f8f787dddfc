"""What a run explains: datasets and their items, targets, preprocessing, and models built from specs.

Everything here turns the user's description of the inputs (a folder, a Dataset or DataLoader, a
targets choice, a model spec and weights file) into the objects the explain loop consumes.
"""
from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from fastcam.io.images import ImageFolder, Preprocess
from fastcam.io.store import read_json

#: (dataset indices of a batch's readable rows, their labels) -> targets for `explain`
TargetsResolver = Callable[[Tensor, list[Any]], Any]


# ---------------------------------------------------------------------------------------------- items
class SafeItems(Dataset):
    """Wraps any dataset so each item becomes {image, label, ok, error}; an exception while loading an
    item marks it not-ok (reported and skipped) instead of killing the run."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            item = self.dataset[index]
            label = None
            if isinstance(item, Mapping):
                if not item.get("ok", True):
                    return {"image": None, "label": None, "ok": False, "error": str(item.get("error", "unreadable"))}
                image, label = item["image"], item.get("label")
            elif isinstance(item, (tuple, list)):
                image = item[0]
                label = item[1] if len(item) > 1 else None
            else:
                image = item
            if not isinstance(image, Tensor) or image.dim() not in (3, 4) or not image.is_floating_point():
                raise TypeError(f"dataset items must give a floating (C, H, W) image or (C, D, H, W) volume tensor, got "
                                f"{type(image).__name__}{tuple(image.shape) if isinstance(image, Tensor) else ''}")
            if isinstance(label, Tensor):
                label = int(label.item())
            return {"image": image, "label": label, "ok": True, "error": ""}
        except Exception as exc:
            return {"image": None, "label": None, "ok": False, "error": f"{type(exc).__name__}: {exc}"}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of `SafeItems` items: the readable images stacked, an ok mask and every row's error."""
    ok = torch.tensor([it["ok"] for it in items], dtype=torch.bool)
    good = [it for it in items if it["ok"]]
    shapes = {tuple(it["image"].shape) for it in good}
    if len(shapes) > 1:
        raise ValueError(f"images of one batch have different shapes {sorted(shapes)}; resize them (--size H W)")
    images = torch.stack([it["image"] for it in good]) if good else None
    return {"images": images, "ok": ok, "labels": [it["label"] for it in good],
            "errors": [it["error"] for it in items]}


def dataset_and_ids(data: Any, preprocess: Preprocess | None) -> tuple[Dataset, list[Any], dict[str, Any], DataLoader | None]:
    """(dataset, sample ids, description, the user's DataLoader if one was given)."""
    loader = None
    if isinstance(data, DataLoader):
        loader, data = data, data.dataset
    if isinstance(data, (str, os.PathLike)):
        data = ImageFolder(data, preprocess or Preprocess())
    from fastcam.io.volumes import VolumeFolder

    if isinstance(data, (ImageFolder, VolumeFolder)):
        kind = "folder" if isinstance(data, ImageFolder) else "volumes"
        return data, data.ids, {"kind": kind, "root": str(Path(data.root).resolve()),
                                "preprocess": data.preprocess.as_dict(), "size": list(data.size)}, loader
    if not isinstance(data, Dataset) or not hasattr(data, "__len__"):
        raise TypeError(f"data must be a folder path, a map-style torch Dataset or a DataLoader, got {type(data).__name__}")
    n = len(data)  # type: ignore[arg-type]
    return data, list(range(n)), {"kind": "dataset", "class": type(data).__qualname__}, loader


# ---------------------------------------------------------------------------------------------- targets
def targets_resolver(targets: Any, ids: Sequence[Any]) -> tuple[TargetsResolver, Any]:
    """A function (dataset indices of the ok rows, their labels) -> targets for `explain`, and a
    JSON description of the choice (part of the run's settings)."""
    if targets is None or targets == "predicted":
        return (lambda idx, labels: None), "predicted"
    if isinstance(targets, bool):
        raise TypeError("targets must be None, 'predicted', 'label', an int, a sequence or a mapping, got bool")
    if isinstance(targets, int):
        return (lambda idx, labels: targets), int(targets)
    if targets == "label":
        def from_labels(idx: Tensor, labels: list[Any]) -> Tensor:
            if any(lab is None for lab in labels):
                raise ValueError("targets='label' but the dataset's items carry no label")
            return torch.tensor([int(lab) for lab in labels], dtype=torch.long)
        return from_labels, "label"
    if isinstance(targets, Mapping):
        table = {str(k): int(v) for k, v in targets.items()}
        missing = [i for i in ids if str(i) not in table]
        if missing:
            raise ValueError(f"targets has no class for {len(missing)} samples, e.g. {missing[:3]}")
        per_index = torch.tensor([table[str(i)] for i in ids], dtype=torch.long)
    elif isinstance(targets, (Sequence, Tensor)) and not isinstance(targets, str):
        per_index = torch.as_tensor(list(targets) if not isinstance(targets, Tensor) else targets).long().flatten()
        if per_index.numel() != len(ids):
            raise ValueError(f"got {per_index.numel()} targets for a dataset of {len(ids)} samples")
    else:
        raise TypeError(f"targets must be None, 'predicted', 'label', an int, a sequence or a mapping, got {targets!r}")
    digest = hashlib.sha256(per_index.numpy().tobytes()).hexdigest()
    return (lambda idx, labels: per_index[idx]), {"per_sample_sha256": digest}


def read_targets_file(path: str | os.PathLike[str]) -> dict[str, int]:
    """CSV (`relative/path,class` per line, optional header) or JSON ({path: class}) -> mapping."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return {str(k): int(v) for k, v in read_json(path).items()}
    table: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if len(row) < 2 or not row[0].strip():
                continue
            try:
                table[row[0].strip()] = int(row[1])
            except ValueError:
                if table:  # only a first (header) line may fail to parse
                    raise ValueError(f"{str(path)!r}: class {row[1]!r} of {row[0]!r} is not an integer") from None
    return table


# ---------------------------------------------------------------------------------------------- models
def load_model(spec: str, weights: str | Path | None = None, num_classes: int | None = None,
               in_channels: int | None = None, softcam: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model of a spec and load its weights. Returns (model, defaults): the spec's source,
    whether the model is left with random weights ("random_weights": a spec with a random initialisation
    and no weights file), and its own preprocessing ("size", "resize", "mean", "std") where it has one.

    SPEC (`fastcam.pipeline.specs`): `torchvision:NAME`, `timm:NAME`, `hf:PATH` (a local folder, never
    downloaded), `fastcam:NAME` (`fastcam.models` builders), `module:factory` (a callable returning an
    nn.Module, or an nn.Module object), or a bare NAME: torchvision's, when torchvision is importable.
    With `softcam=True` the built model is converted with `fastcam.softcam.convert` before the weights
    (of the SoftCAM network) load.
    """
    from fastcam.pipeline.specs import build

    model, defaults = build(spec, num_classes, in_channels)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model spec {spec!r} gave a {type(model).__name__}, not an nn.Module")
    if softcam:
        from fastcam import softcam as sc

        k = num_classes or _output_classes(model)
        model = sc.convert(model, k)
    if weights is not None:
        model.load_state_dict(_load_state_dict(weights))
        defaults["random_weights"] = False
    return model, defaults


def _output_classes(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError("cannot infer the number of classes; pass --num-classes")
    return last[-1].out_features


def _load_state_dict(path: str | Path) -> dict[str, Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} does not hold a state dict")
    return state

"""What a run explains: datasets and their items, targets and preprocessing (models: `fastcam.models`).

Everything here turns the user's description of the inputs (a folder, a Dataset or DataLoader, a
targets choice) into the objects the explain loop consumes; a model spec and weights file are loaded by
`fastcam.models.load_model` (re-exported here).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from fastcam._validation import expected_in_channels, expected_input_size
from fastcam.io.images import FolderItems, ImageFolder, Preprocess, is_picture, picture_tensor

#: (dataset indices of a batch's readable rows, their labels) -> targets for `explain`
TargetsResolver = Callable[[Tensor, list[Any]], Any]


# ---------------------------------------------------------------------------------------------- items
def item_image(item: Any) -> tuple[Any, Any]:
    """(image, label) of a dataset item: an image, an (image, label, ...) tuple or a dict with "image"
    (and "label"), as a Hugging Face `datasets` split gives them."""
    if isinstance(item, Mapping):
        return item["image"], item.get("label")
    if isinstance(item, (tuple, list)):
        return item[0], (item[1] if len(item) > 1 else None)
    return item, None


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
            if isinstance(item, Mapping) and not item.get("ok", True):
                return {"image": None, "label": None, "ok": False, "error": str(item.get("error", "unreadable"))}
            image, label = item_image(item)
            if not isinstance(image, Tensor) or image.dim() not in (3, 4) or not image.is_floating_point():
                raise TypeError(f"dataset items must give a floating (C, H, W) image or (C, D, H, W) volume tensor, "
                                f"a PIL image or an (H, W[, C]) numpy array, got {type(image).__name__}"
                                f"{tuple(image.shape) if isinstance(image, Tensor) else ''}")
            if isinstance(label, Tensor):
                label = int(label.item())
            return {"image": image, "label": label, "ok": True, "error": ""}
        except Exception as exc:
            return {"image": None, "label": None, "ok": False, "error": f"{type(exc).__name__}: {exc}"}


class PreprocessedItems(Dataset):
    """A map-style dataset whose images go through `preprocess` (`Preprocess.display`, then `normalize`):
    pictures (PIL images, numpy arrays: `fastcam.io.images.picture_tensor`) always, tensor images (taken as
    [0, 1] images) only with `tensors=True` (a `preprocess=` the caller gave). Items keep their form."""

    def __init__(self, dataset: Dataset, preprocess: Preprocess, tensors: bool = False) -> None:
        self.dataset, self.preprocess, self.tensors = dataset, preprocess, tensors

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        image, _ = item_image(item)
        if is_picture(image):
            image = picture_tensor(image)
        elif not (self.tensors and isinstance(image, Tensor) and image.dim() == 3):
            return item  # a tensor model input as it is (or something SafeItems refuses by name)
        image = self.preprocess.normalize(self.preprocess.display(image.float()))
        if isinstance(item, Mapping):
            return {**item, "image": image}
        if isinstance(item, (tuple, list)):
            return (image, *item[1:])
        return image


def default_preprocess(model: nn.Module, data: Any) -> Preprocess | None:
    """The preprocessing a user expects when they give none: the model's input channels and, where it says
    (`fastcam._validation.expected_input_size`), its input size; otherwise the size of the first readable
    image (a folder: `fastcam.io.images.FolderItems`; a dataset of pictures: its first picture), other sizes
    resized to it. No normalisation. None for datasets of tensors: those are the model's inputs as they are."""
    channels = expected_in_channels(model) or 3
    size = expected_input_size(model)
    if isinstance(data, (str, os.PathLike)):
        return Preprocess(channels=channels, size=size)
    dataset = data.dataset if isinstance(data, DataLoader) else data
    if isinstance(dataset, FolderItems) or not isinstance(dataset, Dataset) or not hasattr(dataset, "__len__"):
        return None  # a folder dataset preprocesses its files itself
    for index in range(min(len(dataset), 16)):  # type: ignore[arg-type]
        try:
            image, _ = item_image(dataset[index])
        except Exception:  # noqa: BLE001 - an unreadable item: try the next one (it is reported when explained)
            continue
        if not is_picture(image):
            return None
        try:
            first = tuple(picture_tensor(image).shape[-2:])
        except Exception:  # noqa: BLE001 - as above
            continue
        return Preprocess(channels=channels, size=size or first)  # type: ignore[arg-type]
    return None


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of `SafeItems` items: the readable images stacked, an ok mask and every row's error."""
    ok = torch.tensor([it["ok"] for it in items], dtype=torch.bool)
    good = [it for it in items if it["ok"]]
    shapes = {tuple(it["image"].shape) for it in good}
    if len(shapes) > 1:
        raise ValueError(f"images of one batch have different shapes {sorted(shapes)}: pass "
                         "preprocess=fastcam.Preprocess(size=(H, W)) to resize the dataset's images, or make its "
                         "items one size")
    images = torch.stack([it["image"] for it in good]) if good else None
    return {"images": images, "ok": ok, "labels": [it["label"] for it in good],
            "errors": [it["error"] for it in items]}


def dataset_and_ids(data: Any, preprocess: Preprocess | None,
                    preprocess_tensors: bool = False) -> tuple[Dataset, list[Any], dict[str, Any], DataLoader | None]:
    """(dataset, sample ids, description, the user's DataLoader if one was given). A dataset's images go
    through `preprocess` as `PreprocessedItems` says (`preprocess_tensors`: tensor images too)."""
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
    info: dict[str, Any] = {"kind": "dataset", "class": type(data).__qualname__}
    if preprocess is not None:
        info.update(preprocess=preprocess.as_dict(), size=list(preprocess.size) if preprocess.size else None)
        data = PreprocessedItems(data, preprocess, tensors=preprocess_tensors)
    return data, list(range(n)), info, loader


# ---------------------------------------------------------------------------------------------- targets
def targets_table(targets: Any, ids: Sequence[Any], source: str = "targets") -> int | Tensor:
    """One class for all (int) or one per sample in dataset order (int64 tensor) of the per-sample kinds
    of targets: an int, a sequence of N classes, a mapping sample id -> class, or a targets file
    (`os.PathLike`, `read_targets_file`). A mapping must name every sample and nothing else."""
    if isinstance(targets, bool):
        raise TypeError("targets must be None, 'predicted', 'label', an int, a sequence or a mapping, got bool")
    if isinstance(targets, int):
        return int(targets)
    if isinstance(targets, os.PathLike):
        source = f"targets file {str(targets)!r}"
        targets = read_targets_file(targets)
    if isinstance(targets, Mapping):
        table = {str(k): v for k, v in targets.items()}
        bad = [(k, v) for k, v in table.items() if not isinstance(v, int) or isinstance(v, bool)]
        if bad:
            raise ValueError(f"{source}: class {bad[0][1]!r} of {bad[0][0]!r} is not an integer class index")
        known = {str(i) for i in ids}
        unknown = sorted(k for k in table if k not in known)
        if unknown:
            raise ValueError(f"{source} names {len(unknown)} file(s) that are not in the data, e.g. {unknown[:3]}; "
                             "paths must be relative to the data folder (remove or fix those rows)")
        missing = [i for i in ids if str(i) not in table]
        if missing:
            raise ValueError(f"{source} has no class for {len(missing)} sample(s), e.g. {missing[:3]}; "
                             "add a row for each")
        return torch.tensor([table[str(i)] for i in ids], dtype=torch.long)
    if isinstance(targets, (Sequence, Tensor)) and not isinstance(targets, str):
        per_index = torch.as_tensor(list(targets) if not isinstance(targets, Tensor) else targets)
        if per_index.is_floating_point() or per_index.dtype == torch.bool:
            raise TypeError(f"{source} must hold integer class indices, got {per_index.dtype}")
        per_index = per_index.long().flatten()
        if per_index.numel() != len(ids):
            raise ValueError(f"got {per_index.numel()} targets for a dataset of {len(ids)} samples")
        return per_index
    raise TypeError(f"targets must be None, 'predicted', 'label', an int, a sequence, a mapping or a targets file, "
                    f"got {targets!r}")


def targets_resolver(targets: Any, ids: Sequence[Any]) -> tuple[TargetsResolver, Any]:
    """A function (dataset indices of the ok rows, their labels) -> targets for `explain`, and a
    JSON description of the choice (part of the run's settings)."""
    if targets is None or (isinstance(targets, str) and targets == "predicted"):
        return (lambda idx, labels: None), "predicted"
    if isinstance(targets, str) and targets == "label":
        def from_labels(idx: Tensor, labels: list[Any]) -> Tensor:
            if any(lab is None for lab in labels):
                raise ValueError("targets='label' but the dataset's items carry no label")
            return torch.tensor([int(lab) for lab in labels], dtype=torch.long)
        return from_labels, "label"
    table = targets_table(targets, ids)
    if isinstance(table, int):
        return (lambda idx, labels: table), table
    per_index = table
    digest = hashlib.sha256(per_index.numpy().tobytes()).hexdigest()
    return (lambda idx, labels: per_index[idx]), {"per_sample_sha256": digest}


def check_targets_range(targets: Any, ids: Sequence[Any], num_classes: int) -> None:
    """Refuse, before anything is explained, a class outside [0, num_classes) anywhere in the targets,
    naming the first offending sample (and the targets file it comes from)."""
    if targets is None or isinstance(targets, str):
        return  # the predicted class, or labels read with the images
    source = f"targets file {str(targets)!r}" if isinstance(targets, os.PathLike) else "targets"
    table = targets_table(targets, ids, source)
    values = torch.as_tensor(table).view(-1)
    bad = torch.nonzero((values < 0) | (values >= num_classes)).flatten()
    if not bad.numel():
        return
    i = int(bad[0])
    which = "" if isinstance(table, int) else f" of {ids[i]!r} (sample {i})"
    more = f", and {bad.numel() - 1} more" if bad.numel() > 1 else ""
    raise ValueError(f"{source}: class {int(values[i])}{which} is out of range for a model with {num_classes} "
                     f"classes (0 to {num_classes - 1}){more}; fix the class, or check the model's number of classes "
                     "(num_classes=; the CLI's --num-classes)")


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf)", re.IGNORECASE)


def read_targets_file(path: str | os.PathLike[str]) -> dict[str, int]:
    """A targets file -> {relative path: class}, parsed strictly.

    CSV: one `relative/path,class` per line, an optional header line (a first line whose class field is
    not a number), blank lines ignored; JSON: one object {path: class}. UTF-8, with or without a byte
    order mark. Classes must be integers ("1.0" is refused); a path listed twice is refused. Errors
    name the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"targets file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"targets file {str(path)!r} is not UTF-8 text ({exc})") from None
    if path.suffix.lower() == ".json":
        def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            seen: dict[str, Any] = {}
            for key, value in pairs:
                if key in seen:
                    raise ValueError(f"targets file {str(path)!r} lists {key!r} twice")
                seen[key] = value
            return seen

        try:
            data = json.loads(text, object_pairs_hook=no_duplicates)
        except json.JSONDecodeError as exc:
            raise ValueError(f"targets file {str(path)!r} is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"targets file {str(path)!r} must hold one JSON object {{\"relative/path.png\": class, "
                             f"...}}, not a {type(data).__name__}")
        for key, value in data.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"targets file {str(path)!r}: class {value!r} of {key!r} is not an integer "
                                 "class index")
        return data
    table: dict[str, int] = {}
    lines: dict[str, int] = {}
    first = True
    for lineno, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        fields = [f.strip() for f in row]
        if not any(fields):
            continue
        if len(fields) != 2:
            raise ValueError(f"targets file {str(path)!r} line {lineno}: expected 'relative/path,class', got "
                             f"{len(fields)} field(s) {row!r}")
        name, value = fields
        header, first = first and not _NUMBER.fullmatch(value), False
        if header:
            continue
        if not re.fullmatch(r"[+-]?\d+", value):
            raise ValueError(f"targets file {str(path)!r} line {lineno}: class {value!r} of {name!r} is not an "
                             "integer class index")
        if name in table:
            raise ValueError(f"targets file {str(path)!r} line {lineno}: {name!r} is listed twice (first on line "
                             f"{lines[name]})")
        table[name], lines[name] = int(value), lineno
    return table


# ---------------------------------------------------------------------------------------------- models
from fastcam.models.loading import load_model  # noqa: E402,F401 - re-exported (its home before fastcam.models)

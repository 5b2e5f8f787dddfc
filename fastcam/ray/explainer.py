"""`BatchExplainer`: a callable class for `ray.data.Dataset.map_batches`, Ray's convention for stateful batch
inference: each actor builds the model and its explainer once, then explains batch after batch.

    ds = ray.data.read_binary_files("s3://bucket/images/", include_paths=True)
    ds = ds.rename_columns({"path": "id"}).map_batches(
        BatchExplainer, fn_constructor_kwargs={"model": "fastcam:resnet18", "weights": "w.safetensors",
                                               "layer": "layer4", "method": "gradcam", "size": 224},
        concurrency=4, num_gpus=1, batch_size=32)
    ds.write_parquet("s3://bucket/explanations/")

Decoding and preprocessing are the local engine's (`fastcam.io.images`), and the batch is explained by the
pipeline's own step (`fastcam.pipeline.loop.explain_batch`): a row that cannot be decoded, or whose
explanation is non-finite, comes out as a skipped row with the reason, never as a failed batch.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from fastcam.io.images import ImageFolder, Preprocess
from fastcam.io.run.writer import normalised_maps
from fastcam.pipeline.data import SafeItems, collate
from fastcam.pipeline.distributed import parse_device
from fastcam._device import AMP_DTYPES
from fastcam.errors import RandomWeightsWarning
from fastcam.pipeline.folder import prepare_folder
from fastcam.pipeline.loop import check_options, explain_batch

#: the `status` column's values (the run store's `status` array holds 1 and 2 for them)
EXPLAINED, SKIPPED = "explained", "skipped"


class _GivenImages(ImageFolder):
    """One batch's images, given as encoded bytes or decoded arrays instead of files: decoded, checked and
    preprocessed exactly as `ImageFolder` does for files (the first readable image sets the size when the
    preprocessing has none)."""

    def __init__(self, names: Sequence[str], images: Sequence[Any], preprocess: Preprocess,
                 shown: Sequence[str] | None = None) -> None:
        self._given = dict(zip(names, images))
        #: the name each image goes by in messages (its path, else its id)
        self._shown = dict(zip(names, shown if shown is not None else names))
        super().__init__(root="", preprocess=preprocess, files=list(names))

    def _read(self, path: Path) -> Tensor:
        from fastcam.io.images import read_image

        value = self._given[path.as_posix()]
        if isinstance(value, (bytes, bytearray, memoryview)):
            return read_image(self._shown[path.as_posix()], bytes(value))  # same suffix: the name's
        return image_tensor(np.asarray(value))


def check_image_columns(columns: Sequence[str]) -> None:
    """Refuse rows without the columns of an image: `bytes` (encoded) or `image` (decoded)."""
    if "bytes" not in columns and "image" not in columns:
        raise ValueError(f"the rows need a 'bytes' (encoded file) or an 'image' (decoded array) column, got columns "
                         f"{sorted(columns)}")


def given_images(batch: Mapping[str, Any], preprocess: Preprocess) -> ImageFolder:
    """The images of a batch of rows (`bytes`, named by `path` else `id`, or `image` arrays) as a dataset read
    as `ImageFolder` reads files. Raises ValueError when the preprocessing has no size and no image can be read."""
    check_image_columns(list(batch))
    if "bytes" in batch:
        names, given = [str(p) for p in batch.get("path", batch["id"])], list(batch["bytes"])
    else:
        names, given = [str(i) for i in batch["id"]], list(batch["image"])
    # row numbers as names: unique when ids repeat, never mangled as paths ("s3://"); the suffix tells DICOM
    return _GivenImages([f"{row}{Path(name).suffix}" for row, name in enumerate(names)], given, preprocess, names)


def load_rows(batch: Mapping[str, Any], preprocess: Preprocess) -> dict[str, Any]:
    """A batch of rows loaded as `fastcam.pipeline.data.collate` gives a batch of files: an unreadable image
    is a row that is not ok, with the reason; when none can be read (and nothing sets the size) every row is."""
    n = len(batch["id"])
    try:
        items = SafeItems(given_images(batch, preprocess))
        return collate([items[i] for i in range(n)])
    except ValueError as exc:  # none of the batch's images can be read: every row skipped, with why
        if "bytes" not in batch and "image" not in batch:
            raise
        return {"images": None, "ok": torch.zeros(n, dtype=torch.bool), "labels": [], "errors": [str(exc)] * n}


def image_tensor(array: np.ndarray) -> Tensor:
    """A decoded image array as `read_image` gives it: (H, W) or (H, W, C) as Ray's `read_images` yields, or
    (C, H, W) with C in (1, 3); uint8 scaled by 1/255, uint16 by 1/65535, floats taken as [0, 1] values."""
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4) and array.shape[0] not in (1, 3):
        array = array[..., :3].transpose(2, 0, 1)
    elif array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise ValueError(f"unsupported image array shape {array.shape}: expected (H, W), (H, W, C) or (C, H, W)")
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(array.dtype, 1.0)
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) / np.float32(scale))
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError("image contains NaN or Inf pixels")
    return tensor


class BatchExplainer:
    """Explains batches of images on one Ray actor (`Dataset.map_batches(BatchExplainer, ...)`).

    Input columns: `id` (any), and either `bytes` (the encoded file: PNG/JPEG/TIFF/DICOM, with `path` naming
    it, else `id`) or `image` (a decoded array: (H, W[, C]) uint8/uint16/float, as `ray.data.read_images`
    gives); `target` (each row's class index) when `targets="column"`.
    Output columns: `id`, `status` ("explained" or "skipped"), `reason` (empty when explained), `target`,
    `predicted`, `logits` (K,), `lowres` (h, w) divided by its max, in `dtype`, and `scale` (its max:
    raw map = lowres * scale); skipped rows hold the run store's fill values (0 maps, NaN logits, -1 classes).

    Args:
        model: a model spec (`fastcam.pipeline.load_model`: `fastcam:NAME`, `torchvision:NAME`, `timm:NAME`,
            `hf:PATH`, `module:factory`).
        weights: its weights file (read on the actor's node).
        state: its weights as a state dict instead of a file (what `fastcam.ray.explain_dataset` passes, so
            every actor explains with the driver's model).
        num_classes: classes of the model (builders and torchvision).
        in_channels: input channels (fastcam.models builders).
        layer: the target layer (dotted module name; not used by softcam).
        method: a registered method id ("gradcam", "cfcam", ...).
        method_kwargs: keyword arguments of the method's constructor.
        reshape: a `fastcam.reshape.from_spec` layout for layers that are not channels-first maps.
        targets: "predicted" (default), one class index for every row, or "column" (the `target` column).
        size: resize to (H, W) or N×N (default: the model's recipe, else the batch's first image's size).
        mean: normalisation mean per channel (default: the model's recipe).
        std: normalisation std per channel (default: the model's recipe).
        preprocess: the whole preprocessing instead of size/mean/std (what `fastcam.ray.explain_dataset`
            passes).
        amp: None, "bf16" or "fp16": autocast of the forward passes.
        dtype: the `lowres` column's dtype, "float16" (default, as the run store) or "float32".
        device: default the actor's GPU when Ray gave it one, else the CPU.
        threads: torch intra-op threads on the CPU (default: the CPUs Ray assigned to the actor, at least 1).
    """

    def __init__(self, model: str, *, weights: str | Path | None = None, state: Mapping[str, Tensor] | None = None,
                 num_classes: int | None = None, in_channels: int | None = None, layer: str | None = None,
                 method: str = "gradcam", method_kwargs: Mapping[str, Any] | None = None, reshape: str | None = None,
                 targets: str | int = "predicted", size: int | Sequence[int] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 preprocess: Preprocess | None = None, amp: str | None = None, dtype: str = "float16",
                 device: str | None = None, threads: int | None = None) -> None:
        info = check_options(method, amp, dtype, "stat")
        if not (targets in ("predicted", "column") or (isinstance(targets, int) and not isinstance(targets, bool))):
            raise ValueError(f"targets must be 'predicted', 'column' or a class index, got {targets!r}")
        _set_threads(threads)
        with warnings.catch_warnings():
            if state is not None:  # the weights come with `state`: the spec's random init is replaced
                warnings.simplefilter("ignore", RandomWeightsWarning)
            prepared = prepare_folder(model, "", weights=weights, num_classes=num_classes, in_channels=in_channels,
                                      method=info, method_kwargs=method_kwargs, size=size, mean=mean, std=std,
                                      reshape=reshape)
        built = prepared.model
        if state is not None:
            built.load_state_dict(dict(state))
        self.device = parse_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = built.to(self.device).eval()
        self.preprocess = preprocess if preprocess is not None else prepared.preprocess
        self.explainer = info.build(self.model, layer, **prepared.method_kwargs)
        self.targets = targets
        self.amp = AMP_DTYPES[amp]
        self.dtype = np.dtype(dtype)
        self._oom: dict[str, int] = {}

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Explain one batch of rows (see the class docstring for the columns)."""
        ids = list(batch["id"])
        loaded = load_rows(batch, self.preprocess)
        loaded["labels"] = [int(t) for t, ok in zip(batch.get("target", [None] * len(ids)), loaded["ok"]) if ok] \
            if self.targets == "column" else [None] * int(loaded["ok"].sum())
        return self.explain_loaded(ids, loaded, range(len(ids)))

    def explain_loaded(self, ids: Sequence[Any], loaded: Mapping[str, Any],
                       indices: Sequence[int]) -> dict[str, np.ndarray]:
        """The output columns of a batch loaded as `fastcam.pipeline.data.collate` gives it."""
        done = explain_batch(self.explainer, loaded, indices, self._resolve_targets, self.device, self.amp, self._oom)
        n, ok = len(ids), done.ok.numpy()
        out: dict[str, Any] = {"id": np.asarray(ids, dtype=object),
                               "status": np.where(ok, EXPLAINED, SKIPPED).astype(object),
                               "reason": np.asarray(done.errors, dtype=object)}
        target = np.full(n, -1, np.int64)
        predicted = np.full(n, -1, np.int64)
        if done.explained is None:
            out.update(target=target, predicted=predicted, logits=np.full((n, 0), np.nan, np.float32),
                       lowres=np.zeros((n, 0, 0), self.dtype), scale=np.zeros(n, np.float32))
            return out
        _, lowres, logits, tgt = (t.detach().cpu() for t in done.explained)
        maps, scale = normalised_maps(lowres, self.dtype)
        full_maps = np.zeros((n, *maps.shape[1:]), self.dtype)
        full_scale = np.zeros(n, np.float32)
        full_logits = np.full((n, logits.shape[1]), np.nan, np.float32)
        full_maps[ok], full_scale[ok], full_logits[ok] = maps, scale, logits.float().numpy()
        target[ok], predicted[ok] = tgt.numpy(), logits.argmax(dim=1).numpy()
        out.update(target=target, predicted=predicted, logits=full_logits, lowres=full_maps, scale=full_scale)
        return out

    def _resolve_targets(self, index: Tensor, labels: list[Any]) -> Any:
        if self.targets == "column":
            table = torch.tensor([int(t) for t in labels], dtype=torch.long)
            return None if bool((table < 0).all()) else table
        return None if self.targets == "predicted" else int(self.targets)

    def close(self) -> None:
        """Remove the explainer's hooks from the model."""
        close = getattr(self.explainer, "close", None)
        if callable(close):
            close()


def _set_threads(threads: int | None) -> None:
    """torch's intra-op threads: `threads`, else the CPUs Ray assigned to this actor (at least one)."""
    if threads is None:
        import ray

        if not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
            return  # in a driver (or outside Ray): torch's default
        threads = max(1, round(ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)))
    torch.set_num_threads(int(threads))
